"""Configuration and topology changes through the bootstrapper (ApplyEnvironment)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import msgspec
import pytest
from guest_kit import Vm, boot

from fabric.guest.messages import ApplyEnvironment, InstanceStatus
from fabric.model.definition import RoleDefinition
from roles.protocol import Change, InstanceInfo

pytestmark = pytest.mark.timeout(30)

MakeVm = Callable[[RoleDefinition], Vm]
ROLE = RoleDefinition(name="Worker", kind="worker")

LISTENING_WORKER = """
from pathlib import Path

from roles import RoleEntryPoint, RoleEnvironment


@RoleEnvironment.changing.subscribe
def changing(args):
    if any(change.name == "NeedsRestart" for change in args.changes):
        args.cancel = True


@RoleEnvironment.changed.subscribe
def changed(args):
    Path("changed.txt").write_text(RoleEnvironment.get_config_setting("Greeting"))


@RoleEnvironment.simultaneous_changed.subscribe
def simultaneous(args):
    Path("simultaneous.txt").write_text(",".join(sorted(RoleEnvironment.roles)))


class Worker(RoleEntryPoint):
    async def run(self):
        import anyio
        await anyio.sleep_forever()
"""


async def wait_text(vm: Vm, name: str) -> str:
    path = vm.disk.approot / name
    with anyio.fail_after(5):
        while not path.exists() or not path.read_text():
            await anyio.sleep(0.02)
    return path.read_text()


async def test_an_accepted_change_raises_changed_without_a_recycle(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", LISTENING_WORKER)
    config = vm.config(values={"Greeting": "hello"})
    async with boot(vm, config) as booted:
        ready = await booted.wait_for("ReadyRole")
        new = msgspec.structs.replace(config.environment, settings={"Greeting": "bonjour"})
        answer = await booted.ref.ask(
            ApplyEnvironment(environment=new, changes=[Change(kind="setting", name="Greeting")])
        )
        assert answer == "applied"
        assert await wait_text(vm, "changed.txt") == "bonjour"
        assert booted.last.role_pid == ready.role_pid and booted.last.restarts == 0


async def test_a_cancelled_change_recycles_the_role_with_the_new_environment(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", LISTENING_WORKER)
    config = vm.config(values={"Greeting": "hello", "NeedsRestart": "a"})
    async with boot(vm, config) as booted:
        ready = await booted.wait_for("ReadyRole")
        new = msgspec.structs.replace(config.environment, settings={"Greeting": "hallo", "NeedsRestart": "b"})
        mark = len(booted.seen)
        answer = await booted.ref.ask(
            ApplyEnvironment(environment=new, changes=[Change(kind="setting", name="NeedsRestart")])
        )
        assert answer == "recycling"
        stopping = await booted.wait_for("StoppingRole", after=mark)
        assert "cancelled" in stopping.detail

        def back(status: InstanceStatus) -> bool:
            return status.status == "ReadyRole" and status.role_pid != ready.role_pid

        again = await booted.wait_for(back, after=mark)
        assert again.restarts == 1
    assert not (vm.disk.approot / "changed.txt").exists()


async def test_a_blast_topology_change_is_simultaneous_and_never_recycles(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", LISTENING_WORKER)
    config = vm.config(topology_change_discovery="Blast")
    async with boot(vm, config) as booted:
        ready = await booted.wait_for("ReadyRole")
        other = InstanceInfo(id="Cache_IN_0", role_name="Cache", update_domain=0, fault_domain=0)
        new = msgspec.structs.replace(config.environment, roles={"Cache": [other]})
        answer = await booted.ref.ask(
            ApplyEnvironment(environment=new, changes=[Change(kind="topology", name="Cache")])
        )
        assert answer == "applied"
        assert "Cache" in await wait_text(vm, "simultaneous.txt")
        assert booted.last.role_pid == ready.role_pid
        assert "StoppingRole" not in booted.statuses
