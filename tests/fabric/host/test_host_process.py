"""The host agent as a real process, as the controller runs it, booting real VM processes: the
real AppAgent with a stand-in guest agent (quick), and a real worker role (hello-worker)."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import anyio
import msgspec
import psutil
import pytest

from actors import ProcessOptions, Ref, command_line, open_system
from fabric.guest.messages import ApplyEnvironment, GuestConfig
from fabric.guest.standalone import guest_config_for
from fabric.host.agent import host_log_path
from fabric.host.messages import (
    ApplyGuestEnvironment,
    GetHostStatus,
    HostHeartbeat,
    RestartGuest,
    StartGuest,
    StartGuests,
    StopGuest,
)
from fabric.model import load_service
from fabric.settings import Settings
from roles import Change
from tests.fabric.host.host_stand_ins import ControllerStandIn, SpawnHost, guest_config, host_config
from tests.paths import EXAMPLES

pytestmark = [pytest.mark.timeout(30), pytest.mark.slow]

#: short heartbeats and a 2 s watchdog, so that a hung guest is restarted within the test
FAST = Settings.fast(guest_heartbeat_timeout=2.5, host_heartbeat_interval=0.2)
ROLE_ORDER = ["CreatingRole", "StartingRole", "ReadyRole"]


def never_backwards(seen: list[str]) -> bool:
    """The role's statuses as relayed go forward only (a stale push is not relayed)."""
    ranks = [ROLE_ORDER.index(s) for s in seen if s in ROLE_ORDER]
    return ranks == sorted(ranks)


@dataclass
class Host:
    """A host agent process, its recording parent, and a VM config for it."""

    ref: Ref
    controller: ControllerStandIn
    config: GuestConfig
    log: Path

    @property
    def pid(self) -> int:
        assert self.ref.pid is not None
        return self.ref.pid

    def vm_pids(self) -> list[int]:
        """The VMs' first processes: the host process's children but its guest template."""
        return [p.pid for p in psutil.Process(self.pid).children() if _alive(p.pid) and not _is_template(p)]

    async def vm_pid_other_than(self, old: int, seconds: float = 20.0) -> int:
        """Wait until a VM process other than ``old`` runs; return its pid."""
        with anyio.fail_after(seconds):
            while not (pids := [p for p in self.vm_pids() if p != old]):
                await anyio.sleep(0.02)
        return pids[0]


def _is_template(proc: psutil.Process) -> bool:
    try:
        return "actors._template" in command_line(proc.cmdline())
    except psutil.Error:
        return False


@asynccontextmanager
async def host_process(tmp_path: Path, settings: Settings = FAST) -> AsyncIterator[Host]:
    """Spawn a host agent process the way the controller does, with a recording parent."""
    controller = ControllerStandIn()
    config = host_config(tmp_path, settings)
    async with open_system() as system:
        parent = await system.spawn(lambda: controller, name="controller")
        options = ProcessOptions(log_path=tmp_path / "host.out.log", stop_timeout=10.0)
        ref = await parent.ask(SpawnHost(config=config, options=options))
        yield Host(ref, controller, guest_config(tmp_path, settings), host_log_path(config))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_gone(pid: int, seconds: float = 10.0) -> None:
    """Poll until the process is gone, with a deadline."""
    with anyio.fail_after(seconds):
        while _alive(pid):
            await anyio.sleep(0.02)


async def test_a_host_process_boots_a_vm_relays_its_status_and_stops_it(tmp_path: Path) -> None:
    async with host_process(tmp_path) as h:
        vm = await h.ref.ask(StartGuest(h.config))
        assert vm in h.vm_pids()
        assert os.getsid(vm) == vm != h.pid  # a VM is its own session: killed whole
        await h.controller.wait_for("ReadyRole", 15)
        seen = h.controller.seen()
        assert seen[:2] == ["CreatingVM", "StartingVM"]
        assert seen[-1] == "ReadyRole" and never_backwards(seen)
        status: HostHeartbeat = await h.ref.ask(GetHostStatus())
        assert status.pid == h.pid
        assert status.instances["Worker_IN_0"].status == "ReadyRole"
        change = ApplyEnvironment(environment=h.config.environment, changes=[])
        assert await h.ref.ask(ApplyGuestEnvironment(instance_id="Worker_IN_0", change=change)) == "applied"

        await h.ref.ask(StopGuest(instance_id="Worker_IN_0", delete_disk=True))
        assert not _alive(vm)
        assert h.vm_pids() == []
        assert not Path(h.config.vm_root).exists()
        await h.controller.wait_for("StoppedVM", 5)
        assert h.controller.seen()[-2:] == ["StoppingVM", "StoppedVM"]
        log = h.log.read_text()
        assert "starting guest Worker_IN_0" in log and f"guest Worker_IN_0 booted (pid {vm})" in log
        assert "guest Worker_IN_0 stopped" in log


async def test_start_guests_boots_each_and_one_failing_does_not_fail_the_other(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    bad = msgspec.structs.replace(guest_config(tmp_path, FAST, index=1), vm_root=str(blocker / "Worker_IN_1"))
    async with host_process(tmp_path) as h:
        good, failed = (await h.ref.ask(StartGuests([h.config, bad]))).outcomes
        assert good.pid in h.vm_pids() and not good.error_type
        assert failed.pid == 0 and failed.error_type and "not-a-folder" in failed.error
        await h.controller.wait_for("ReadyRole", 15)
        status: HostHeartbeat = await h.ref.ask(GetHostStatus())
        assert status.instances["Worker_IN_0"].status == "ReadyRole"


async def test_a_sigstopped_guest_goes_unknown_and_is_restarted_by_the_watchdog(tmp_path: Path) -> None:
    async with host_process(tmp_path) as h:
        vm = await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 15)
        mark = h.controller.mark()
        os.kill(vm, signal.SIGSTOP)
        stopped_at = anyio.current_time()
        await h.controller.wait_for("ReadyRole", 20, since=mark)
        assert h.controller.seen(since=mark)[:3] == ["RoleStateUnknown", "StoppedVM", "StartingVM"]
        assert h.controller.at("StoppedVM", since=mark) - stopped_at >= FAST.guest_heartbeat_timeout
        await wait_gone(vm)  # killed while stopped
        new = await h.vm_pid_other_than(vm)
        assert os.getsid(new) == new
        log = h.log.read_text()
        assert "watchdog: no heartbeat reply from Worker_IN_0" in log
        assert "its state is unknown" in log


async def test_stopping_an_unresponsive_guest_kills_it_without_waiting(tmp_path: Path) -> None:
    patient = Settings.fast(guest_heartbeat_timeout=60.0)  # the watchdog stays out of it
    async with host_process(tmp_path, patient) as h:
        vm = await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 15)
        os.kill(vm, signal.SIGSTOP)
        await h.controller.wait_for("RoleStateUnknown", 10)
        with anyio.fail_after(3):  # the polite stop would wait on_stop_timeout and more
            await h.ref.ask(StopGuest(instance_id="Worker_IN_0"))
        assert not _alive(vm)
        assert "does not answer heartbeats; killing it" in h.log.read_text()


async def test_a_sigkilled_guest_is_rebooted(tmp_path: Path) -> None:
    async with host_process(tmp_path) as h:
        vm = await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 15)
        mark = h.controller.mark()
        os.kill(vm, signal.SIGKILL)
        await h.controller.wait_for("ReadyRole", 15, since=mark)
        assert h.controller.seen(since=mark)[:2] == ["StoppedVM", "StartingVM"]
        details = [m.status.detail for _, m in h.controller.statuses if m.status.status == "StoppedVM"]
        assert "was killed by SIGKILL" in details[0]
        assert "rebooting in" in details[0]
        assert await h.vm_pid_other_than(vm) != vm
        assert "went down" in h.log.read_text()


async def test_reboot_keeps_the_disk_and_reimage_wipes_it(tmp_path: Path) -> None:
    async with host_process(tmp_path) as h:
        first = await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 15)
        marker = Path(h.config.vm_root) / "E" / "approot" / "left-by-the-role.txt"
        marker.parent.mkdir(parents=True)
        marker.write_text("state")

        mark = h.controller.mark()
        second = await h.ref.ask(RestartGuest(instance_id="Worker_IN_0"))
        assert second != first and not _alive(first)
        assert marker.exists()
        await h.controller.wait_for("ReadyRole", 15, since=mark)
        assert h.controller.seen(since=mark)[:2] == ["StoppedVM", "StartingVM"]

        mark = h.controller.mark()
        third = await h.ref.ask(RestartGuest(instance_id="Worker_IN_0", reimage=True))
        assert third != second and not _alive(second)
        assert not marker.exists()
        await h.controller.wait_for("ReadyRole", 15, since=mark)
        assert h.vm_pids() == [third]
        assert "wiped the disk of Worker_IN_0" in h.log.read_text()


async def test_host_heartbeats_arrive_every_interval(tmp_path: Path) -> None:
    async with host_process(tmp_path) as h:
        await h.controller.wait_until(lambda: len(h.controller.heartbeats) >= 8, 10)
        times = [t for t, _ in h.controller.heartbeats]
        gap = statistics.median(b - a for a, b in pairwise(times))
        assert gap == pytest.approx(FAST.host_heartbeat_interval, abs=0.05)
        assert {beat.pid for _, beat in h.controller.heartbeats} == {h.pid}


async def test_stopping_the_host_stops_its_vms_and_says_so(tmp_path: Path) -> None:
    async with host_process(tmp_path) as h:
        vm = await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 15)
        await h.ref.stop()
        assert not _alive(vm)
        await h.controller.wait_for("StoppedVM", 5)
        assert h.controller.seen()[-1] == "StoppedVM"


async def test_vms_die_with_a_sigkilled_host(tmp_path: Path) -> None:
    async with host_process(tmp_path) as h:
        vm = await h.ref.ask(StartGuest(h.config))
        os.kill(h.pid, signal.SIGKILL)
        await wait_gone(vm)


@pytest.mark.timeout(45)
async def test_a_real_worker_vm_reaches_ready_is_rebooted_and_stops_clean(tmp_path: Path) -> None:
    service = load_service(EXAMPLES / "hello-worker")
    async with host_process(tmp_path) as h:
        config = guest_config_for(service, "HelloWorker", 0, tmp_path, FAST)
        vm = await h.ref.ask(StartGuest(config))
        iid = config.instance_id
        await h.controller.wait_for("ReadyRole", 30, instance_id=iid)
        seen = h.controller.seen(iid)
        assert seen[:2] == ["CreatingVM", "StartingVM"]
        assert "CreatingRole" in seen and seen[-1] == "ReadyRole" and never_backwards(seen)
        status: HostHeartbeat = await h.ref.ask(GetHostStatus())
        role_pid = status.instances[iid].role_pid
        assert role_pid and _alive(role_pid)

        mark = h.controller.mark()
        os.kill(vm, signal.SIGKILL)  # the guest OS crashes: its role goes with it
        await wait_gone(role_pid)
        await h.controller.wait_for("ReadyRole", 30, instance_id=iid, since=mark)
        status = await h.ref.ask(GetHostStatus())
        assert status.instances[iid].role_pid not in (0, role_pid)

        await h.ref.ask(StopGuest(instance_id=iid))
        assert h.vm_pids() == []
        assert not _alive(status.instances[iid].role_pid)


SLOW_CHANGE = """
import anyio

from roles import RoleEntryPoint, RoleEnvironment


class HelloWorker(RoleEntryPoint):
    async def on_start(self) -> bool:
        RoleEnvironment.changing.subscribe(self.changing)
        return True

    async def run(self) -> None:
        await anyio.sleep_forever()

    async def changing(self, args) -> None:
        await anyio.sleep(3)  # longer than the watchdog's 2.5 s
"""


async def test_heartbeats_are_answered_while_a_change_is_applied(tmp_path: Path) -> None:
    # A role's changing handler may take up to status_check_timeout: the VM goes on answering
    # heartbeats meanwhile, so the host neither loses sight of it nor restarts its guest OS.
    folder = tmp_path / "slow-change"
    shutil.copytree(EXAMPLES / "hello-worker", folder, ignore=shutil.ignore_patterns("tests"))
    (folder / "HelloWorker" / "worker.py").write_text(SLOW_CHANGE)
    settings = Settings.fast(
        guest_heartbeat_timeout=2.5, host_heartbeat_interval=0.2, status_check_timeout=10.0
    )
    async with host_process(tmp_path, settings) as h:
        config = guest_config_for(load_service(folder), "HelloWorker", 0, tmp_path, settings)
        iid = config.instance_id
        vm = await h.ref.ask(StartGuest(config))
        await h.controller.wait_for("ReadyRole", 30, instance_id=iid)
        mark = h.controller.mark()
        change = ApplyEnvironment(
            environment=config.environment, changes=[Change(kind="setting", name="Greeting")]
        )
        started = anyio.current_time()
        assert await h.ref.ask(ApplyGuestEnvironment(instance_id=iid, change=change), timeout=20) == "applied"
        assert anyio.current_time() - started >= 3.0  # the handler ran to its end
        assert h.controller.seen(iid, since=mark) == []  # never RoleStateUnknown, never rebooted
        assert h.vm_pids() == [vm]
        await h.ref.ask(StopGuest(instance_id=iid))


def _heap_start(pid: int) -> int:
    """Where the process's brk heap begins: the same in a fork as in its parent, and drawn at
    random by every exec (ASLR), so it tells which process another was copied from."""
    with open(f"/proc/{pid}/maps") as maps:
        return next(int(line.split("-")[0], 16) for line in maps if line.rstrip().endswith("[heap]"))


async def test_a_vms_processes_are_copies_of_the_hosts_guest_template(tmp_path: Path) -> None:
    """No VM process execs an interpreter: the VM's first process, its bootstrapper, its role
    host template and its role host are copies of the host's one GuestTemplate."""
    service = load_service(EXAMPLES / "hello-worker")
    async with host_process(tmp_path) as h:
        configs = [guest_config_for(service, "HelloWorker", i, tmp_path, FAST) for i in range(2)]
        vms = [await h.ref.ask(StartGuest(config)) for config in configs]
        for config in configs:
            await h.controller.wait_for("ReadyRole", 30, instance_id=config.instance_id)
        (template,) = [p for p in psutil.Process(h.pid).children() if _is_template(p)]
        assert "GuestTemplate" in command_line(template.cmdline())
        status: HostHeartbeat = await h.ref.ask(GetHostStatus())
        for vm, config in zip(vms, configs, strict=True):
            bootstrapper = psutil.Process(status.instances[config.instance_id].role_pid).ppid()
            assert psutil.Process(bootstrapper).ppid() == vm and psutil.Process(vm).ppid() == h.pid
            role_host = status.instances[config.instance_id].role_pid
            # Its role host template: the seed the bootstrapper planted, not an exec'd one.
            (role_template,) = [p.pid for p in psutil.Process(bootstrapper).children() if _is_template(p)]
            for pid in (vm, bootstrapper, role_template, role_host):
                assert _heap_start(pid) == _heap_start(template.pid)
        assert _heap_start(h.pid) != _heap_start(template.pid)
