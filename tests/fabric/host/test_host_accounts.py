"""A VM's account (uid) is chosen by the host that runs it, on its own machine: never a uid a
process there runs as, nor one another VM of any host agent there holds (issue 12)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest

from actors import ProcessOptions, open_system
from fabric.guest.account import UID_FIRST, UID_LAST, running_uids
from fabric.host.accounts import HostAccounts
from fabric.host.messages import StartGuest, StopGuest
from fabric.settings import Settings
from tests.fabric.cluster.joined_kit import cluster
from tests.fabric.host.host_stand_ins import ControllerStandIn, SpawnHost, guest_config, host_config
from tests.netns import loopback_hosts

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="running a process as a VM's uid needs root"),
]

FAST = Settings.fast(host_heartbeat_interval=0.2)


def free_span(width: int) -> int:
    """The first of ``width`` uids of the VM range no process runs as now, from the top down
    (VMs of fabrics beside the tests draw from anywhere: the chosen one is checked, not guessed)."""
    running = running_uids()
    for first in range(UID_LAST - width + 1, UID_FIRST, -width):
        if not running & set(range(first, first + width)):
            return first
    raise AssertionError("no free span of VM uids on this machine")


@contextmanager
def running_as(uid: int) -> Iterator[subprocess.Popen[bytes]]:
    """A process of this machine (not a VM) running as ``uid`` until the block ends."""
    proc = subprocess.Popen(["sleep", "120"], user=uid, group=uid, start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_hosts_of_one_machine_never_share_a_uid_nor_take_one_in_use(tmp_path: Path) -> None:
    first = free_span(4)
    span = (first, first + 3)
    one, two = HostAccounts("fabric-a", span, tmp_path), HostAccounts("fabric-b", span, tmp_path)
    again = HostAccounts("fabric-a", span, tmp_path)  # fabric-a's host agent, restarted
    try:
        with running_as(first):
            a = one.choose("Web_IN_0", first)  # the controller's record proposes the busy uid
            assert a != first and first < a <= first + 3
            assert one.choose("Web_IN_0", None) == a  # kept for the VM's life
            b = two.choose("Web_IN_0", a)  # another host agent of the machine (another fabric)
            assert b not in (first, a)
            c = one.choose("Web_IN_1", b)  # another VM of the same host
            assert c not in (first, a, b)
            one.release("Web_IN_0")  # its host agent let go of it (stopped, or died)...
            with running_as(a):  # ...but what escaped the VM still runs as its uid
                with pytest.raises(RuntimeError, match="are in use"):
                    two.choose("Web_IN_1", a)  # not fabric-b's: in use, and the span is full
                assert again.choose("Web_IN_0", a) == a  # its own VM's leftovers: taken back
    finally:
        for accounts in (one, two, again):
            for vm in list(accounts.held):
                accounts.release(vm)


async def test_a_host_agent_gives_its_vm_a_uid_free_on_its_machine_and_reports_it(tmp_path: Path) -> None:
    first = free_span(4)
    controller = ControllerStandIn()
    config = msgspec.structs.replace(host_config(tmp_path, FAST), uids=(first, first + 3))
    vm = msgspec.structs.replace(guest_config(tmp_path, FAST), vm_uid=first)  # the controller proposes it
    with running_as(first) as busy:
        async with open_system() as system:
            parent = await system.spawn(lambda: controller, name="controller")
            options = ProcessOptions(log_path=tmp_path / "host.out.log", stop_timeout=10.0)
            host = await parent.ask(SpawnHost(config=config, options=options))
            await host.ask(StartGuest(vm), timeout=30)
            await controller.wait_for("ReadyRole", 30)
            uids = {m.uid for _, m in controller.statuses}
            assert len(uids) == 1 and first < uids.pop() <= first + 3, controller.statuses
            assert busy.poll() is None  # the process running as the busy uid was left alone
            await host.ask(StopGuest(instance_id=vm.instance_id), timeout=30)
            await host.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_the_controller_shows_the_uids_joined_hosts_chose(tmp_path: Path) -> None:
    with loopback_hosts(2, tmp_path / "hosts") as hosts:  # two hosts of one machine
        async with cluster(hosts, tmp_path) as c:
            await c.start_controller()
            await c.join_all((0, 1))
            await c.deploy()
            view = await c.all_ready()
            uids = {i.id: i.uid for i in view.instances}
            assert len(set(uids.values())) == 6 and all(UID_FIRST <= u <= UID_LAST for u in uids.values())
            owners = {  # what each VM's folder on its host belongs to (root:<uid>)
                folder.name.rsplit(".", 1)[1]: folder.stat().st_gid
                for host in hosts
                for folder in (host.state_dir / "host" / "vms").iterdir()
            }
            assert owners == uids
