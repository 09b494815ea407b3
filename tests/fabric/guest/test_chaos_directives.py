"""Faults chaos plants in C/Config/Chaos.json reach the next role start, once."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from fabric.model.definition import RoleDefinition
from tests.fabric.guest.guest_kit import WORKER, Vm, boot

pytestmark = pytest.mark.timeout(30)

ROLE = RoleDefinition(name="Worker", kind="worker")
MakeVm = Callable[[RoleDefinition], Vm]


def plant(vm: Vm, directives: dict[str, object]) -> None:
    vm.disk.config_dir.mkdir(parents=True, exist_ok=True)
    vm.disk.chaos_file.write_text(json.dumps(directives))


async def test_a_planted_failing_startup_task_blocks_the_instance(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", WORKER)
    plant(vm, {"startup_task": {"mode": "fail"}})
    async with boot(vm, vm.config()) as booted:
        failed = await booted.wait_for("FailedStartingRole")
        assert "exited with code 3" in failed.detail
    assert "chaos: the first startup task fails on purpose" in booted.log()
    assert not vm.disk.chaos_file.exists()  # used once


async def test_on_start_fails_once_then_the_role_comes_up(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", WORKER)
    plant(vm, {"on_start": {"mode": "fail"}})
    async with boot(vm, vm.config()) as booted:
        restarting = await booted.wait_for("RestartingRole")
        assert "on_start failed on purpose (chaos)" in restarting.detail
        ready = await booted.wait_for("ReadyRole")
        assert ready.restarts == 1


async def test_a_slow_on_start_holds_the_role_in_starting(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", WORKER)
    plant(vm, {"on_start": {"mode": "slow", "seconds": 1.5}})
    async with boot(vm, vm.config()) as booted:
        starting = await booted.wait_for("StartingRole")
        ready = await booted.wait_for("ReadyRole")
        assert ready.at - starting.at >= 1.5
