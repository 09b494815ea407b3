"""A worker role under the bootstrapper: Ready, busy, crashes, hangs, recycles and restarts."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import anyio
import msgspec
import psutil
import pytest

from fabric.guest.messages import GetInstanceStatus, InstanceStatus, RecycleRole
from fabric.model.definition import RoleDefinition
from tests.fabric.guest.guest_kit import FAST, VM_UID, WORKER, Vm, boot

pytestmark = pytest.mark.timeout(30)

ROLE = RoleDefinition(name="Worker", kind="worker")
MakeVm = Callable[[RoleDefinition], Vm]

BUSY_WORKER = """
from pathlib import Path

from roles import RoleEntryPoint, RoleEnvironment


@RoleEnvironment.status_check.subscribe
def check(args):
    if Path("busy.flag").exists():
        args.set_busy()


class Worker(RoleEntryPoint):
    async def run(self):
        import anyio
        await anyio.sleep_forever()
"""


async def test_a_worker_role_reaches_ready_and_the_log_tells_each_step(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config()) as booted:
        ready = await booted.wait_for("ReadyRole")
        assert ready.role_pid > 0 and psutil.pid_exists(ready.role_pid)
        assert ready.restarts == 0
        assert booted.statuses[:2] == ["StartingRole", "ReadyRole"]
        assert await booted.ref.ask(GetInstanceStatus()) == booted.last
        # The role host reports through its relay from its first instant: on a loaded machine
        # its ReadyRole is logged before the bootstrapper's own "started" line (seen in a run).
        with anyio.fail_after(30):
            while "started WaWorkerHost" not in vm.disk.bootstrapper_log.read_text():
                await anyio.sleep(0.05)
    log = vm.disk.bootstrapper_log.read_text()
    for line in (
        "WaHostBootstrapper starting",
        "started WaWorkerHost",
        "status ReadyRole",
        "status StoppingRole",
    ):
        assert line in log
    assert log.splitlines()[0][:4].isdigit()  # every line starts with its timestamp
    assert (vm.disk.role_resources / "WaWorkerHost.log").exists()
    assert not psutil.pid_exists(ready.role_pid) or psutil.Process(ready.role_pid).status() == "zombie"


async def test_set_busy_shows_busy_until_the_next_check_clears_it(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", BUSY_WORKER)
    async with boot(vm, vm.config()) as booted:
        await booted.wait_for("ReadyRole")
        flag = vm.disk.approot / "busy.flag"
        flag.touch()
        busy = await booted.wait_for("BusyRole", timeout=5)
        assert "set_busy" in busy.detail
        flag.unlink()
        mark = len(booted.seen)
        await booted.wait_for("ReadyRole", timeout=5, after=mark)
        assert booted.statuses[-2:] == ["BusyRole", "ReadyRole"]


async def test_a_sigkilled_role_host_is_restarted_with_backoff(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config()) as booted:
        first = await booted.wait_for("ReadyRole")
        delays = []
        pid = first.role_pid
        for round_ in (1, 2, 3):
            os.kill(pid, signal.SIGKILL)
            mark = len(booted.seen)
            restarting = await booted.wait_for(
                lambda st: st.status in ("RestartingRole", "CyclingRole"), after=mark
            )
            assert "SIGKILL" in restarting.detail and f"restart {round_}" in restarting.detail
            starting = await booted.wait_for("StartingRole", after=mark)
            delays.append(starting.at - restarting.at)
            ready = await booted.wait_for("ReadyRole", after=mark)
            assert ready.restarts == round_
            assert ready.role_pid not in (0, pid)
            pid = ready.role_pid
        # a first crash restarts at once; in a row, role_restart_initial (0.2 s), then twice that
        assert delays[0] < 0.2 and delays[1] >= 0.2 and delays[2] >= 0.4
    log = vm.disk.bootstrapper_log.read_text()
    assert "restart 1 in 0.00 s" in log and "restart 2 in 0.20 s" in log and "restart 3 in 0.40 s" in log


async def test_a_stopped_role_host_becomes_unresponsive_then_is_recycled(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config()) as booted:
        first = await booted.wait_for("ReadyRole")
        # A host may report ready before its start handshake reaches the bootstrapper: stopped
        # in between, it would be unresponsive for its start, not for a StatusCheck (see
        # test_hang_after_ready). Stop it once started, as this test means to.
        await booted.wait_for_log(f"started WaWorkerHost (pid {first.role_pid})")
        os.kill(first.role_pid, signal.SIGSTOP)
        mark = len(booted.seen)
        unresponsive = await booted.wait_for("UnresponsiveRole", after=mark)
        assert "StatusCheck" in unresponsive.detail
        stopping = await booted.wait_for("StoppingRole", after=mark)
        assert "unresponsive" in stopping.detail
        # role_unresponsive_timeout is 1 s
        assert stopping.at - unresponsive.at >= 1.0
        ready = await booted.wait_for("ReadyRole", after=mark)
        assert ready.role_pid != first.role_pid and ready.restarts == 1
        assert not psutil.pid_exists(first.role_pid) or psutil.Process(first.role_pid).status() == "zombie"


async def test_a_role_that_keeps_crashing_after_ready_is_cycling(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write(
        "worker.py",
        """
        from roles import RoleEntryPoint


        class Worker(RoleEntryPoint):
            async def run(self):
                raise RuntimeError("lost the queue")
        """,
    )
    async with boot(vm, vm.config()) as booted:
        cycling = await booted.wait_for("CyclingRole", timeout=15)
        assert "lost the queue" in cycling.detail
        assert cycling.restarts == 3
        assert booted.statuses.count("RestartingRole") == 2
        assert "ReadyRole" in booted.statuses


async def test_a_role_that_never_starts_shows_failed_starting_and_keeps_trying(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write(
        "worker.py",
        """
        from roles import RoleEntryPoint


        class Worker(RoleEntryPoint):
            def on_start(self):
                raise ValueError("no connection string")
        """,
    )
    async with boot(vm, vm.config()) as booted:
        failed = await booted.wait_for("FailedStartingRole", timeout=15)
        assert "on_start raised ValueError: no connection string" in failed.detail
        assert "ReadyRole" not in booted.statuses
        mark = len(booted.seen)
        again = await booted.wait_for("StartingRole", after=mark)  # still retrying
        assert again.restarts >= 3


async def test_recycle_role_stops_and_restarts_the_host_at_once(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config()) as booted:
        first = await booted.wait_for("ReadyRole")
        mark = len(booted.seen)
        await booted.ref.tell(RecycleRole())
        await booted.wait_for("StoppingRole", after=mark)
        ready = await booted.wait_for("ReadyRole", after=mark)
        assert ready.restarts == 1 and ready.role_pid != first.role_pid
        assert "RestartingRole" not in booted.statuses


async def test_run_returning_recycles_the_role(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write(
        "worker.py",
        """
        from pathlib import Path

        from roles import RoleEntryPoint


        class Worker(RoleEntryPoint):
            async def run(self):
                runs = Path("runs.txt")
                count = len(runs.read_text()) if runs.exists() else 0
                runs.write_text("x" * (count + 1))
                if count == 0:
                    return
                import anyio
                await anyio.sleep_forever()
        """,
    )
    async with boot(vm, vm.config()) as booted:

        def second_ready(status: InstanceStatus) -> bool:
            return status.status == "ReadyRole" and status.restarts == 1

        await booted.wait_for(second_ready)
        assert booted.statuses[:4] == ["StartingRole", "ReadyRole", "StoppingRole", "StartingRole"]
        assert "RestartingRole" not in booted.statuses


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_a_limited_role_host_runs_as_the_vms_account(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config(vm_uid=VM_UID)) as booted:
        ready = await booted.wait_for("ReadyRole")
        assert psutil.Process(ready.role_pid).uids() == (VM_UID, VM_UID, VM_UID)
        log = vm.disk.role_resources / "WaWorkerHost.log"
        with anyio.fail_after(5):
            while "ready" not in log.read_text():
                await anyio.sleep(0.02)


async def test_a_role_that_ran_long_enough_starts_its_backoff_afresh(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write(
        "worker.py",
        """
        from roles import RoleEntryPoint


        class Worker(RoleEntryPoint):
            async def run(self):
                import anyio
                await anyio.sleep(0.6)
                raise RuntimeError("crashed after a healthy while")
        """,
    )
    settings = msgspec.structs.replace(FAST, role_restart_reset=0.5)
    async with boot(vm, vm.config(settings=settings)) as booted:

        def third_failure(status: InstanceStatus) -> bool:
            return status.restarts == 3 and status.status != "StartingRole"

        await booted.wait_for(third_failure, timeout=15)
    failures = [s for s in booted.seen if s.status in ("RestartingRole", "CyclingRole", "FailedStartingRole")]
    assert [s.status for s in failures] == ["RestartingRole"] * 3
    assert all("in 0.00 s (1 failure in a row)" in s.detail for s in failures)
