"""Startup tasks (seed G, step 7): simple, background and foreground tasks, variables, users."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec
import psutil
import pytest

from fabric.model.definition import LocalStorage, RoleDefinition, StartupTask, TaskVariable
from tests.fabric.guest.guest_kit import FAST, VM_UID, WORKER, Vm, boot, wait_gone

pytestmark = pytest.mark.timeout(30)

MakeVm = Callable[[RoleDefinition], Vm]
CI = "/RoleEnvironment/CurrentInstance"


def role(*tasks: StartupTask, **fields: object) -> RoleDefinition:
    return RoleDefinition(name="Worker", kind="worker", startup=tasks, **fields)  # type: ignore[arg-type]


def group_members(pgid: int) -> list[int]:
    """Live processes in a process group (wherever they were reparented)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def role_hosts(bootstrapper_pid: int) -> list[psutil.Process]:
    """The role host processes under the bootstrapper."""
    children = psutil.Process(bootstrapper_pid).children(recursive=True)
    return [p for p in children if "actors._child" in " ".join(p.cmdline())]


async def wait_file(path: os.PathLike[str] | str, timeout: float = 10.0) -> str:
    """The text of a file, once it exists and is not empty."""
    with anyio.fail_after(timeout):
        while True:
            try:
                text = Path(path).read_text()
            except FileNotFoundError:
                text = ""
            if text:
                return text
            await anyio.sleep(0.02)


async def test_a_failing_simple_task_blocks_the_instance_and_names_itself(make_vm: MakeVm) -> None:
    vm = make_vm(
        role(
            StartupTask(command_line="echo one > one.txt"),
            StartupTask(command_line="echo 'cannot install' >&2; exit 3", execution_context="elevated"),
            StartupTask(command_line="touch never.txt"),
        )
    )
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config()) as booted:
        failed = await booted.wait_for("FailedStartingRole")
        log_path = vm.disk.diagnostic_store / "StartupTasks" / "1.log"
        assert "exit 3" in failed.detail  # the command line
        assert "exited with code 3" in failed.detail
        assert str(log_path) in failed.detail
        assert "cannot install" in log_path.read_text()
        assert (vm.disk.approot / "one.txt").exists()
        assert not (vm.disk.approot / "never.txt").exists()
        assert failed.role_pid == 0 and "ReadyRole" not in booted.statuses
        assert booted.ref.pid is not None and role_hosts(booted.ref.pid) == []
    log = booted.log()
    assert "task 1 (simple, elevated) \"echo 'cannot install' >&2; exit 3\" exited with code 3" in log
    assert "started WaWorkerHost" not in log


async def test_background_tasks_run_beside_the_role_and_are_killed_with_the_vm(make_vm: MakeVm) -> None:
    vm = make_vm(
        role(
            StartupTask(command_line="echo $$ > bg.pid; sleep 60; touch bg.done", task_type="background"),
            # a simple task that leaves a daemon behind: it dies with the VM too
            StartupTask(command_line="(sleep 60 &) ; ps -o pgid= -p $$ | tr -d ' ' > daemon.pid"),
        )
    )
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config()) as booted:
        await booted.wait_for("ReadyRole")
        background = int(await wait_file(vm.disk.approot / "bg.pid"))
        daemon_group = int(await wait_file(vm.disk.approot / "daemon.pid"))
        assert psutil.pid_exists(background)  # still running while the role is Ready
        assert len(group_members(daemon_group)) == 1  # the orphaned sleep
        groups = [os.getpgid(background), daemon_group]
    with anyio.fail_after(5):  # SIGKILLed; the kernel may take a moment to finish them
        while any(group_members(pgid) for pgid in groups):
            await anyio.sleep(0.02)
    assert not (vm.disk.approot / "bg.done").exists()
    assert "killing task 0 (background, limited)" in booted.log()


async def test_a_foreground_task_keeps_the_role_from_stopping_until_it_exits(make_vm: MakeVm) -> None:
    vm = make_vm(
        role(
            StartupTask(
                command_line="while [ ! -f release ]; do sleep 0.02; done; echo done > fg.done",
                task_type="foreground",
            )
        )
    )
    vm.write("worker.py", WORKER)
    stopped = anyio.Event()
    async with boot(vm, vm.config()) as booted:
        await booted.wait_for("ReadyRole")

        async def stop() -> None:
            await booted.ref.stop()
            stopped.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stop)
            await booted.wait_for("StoppingRole")
            with anyio.move_on_after(0.5):
                await stopped.wait()
            assert not stopped.is_set()  # held by the foreground task
            assert "waiting for foreground task 0" in booted.log()
            (vm.disk.approot / "release").touch()
            with anyio.fail_after(10):
                await stopped.wait()
    assert (vm.disk.approot / "fg.done").read_text() == "done\n"


async def test_task_variables_resolve_role_instance_values(make_vm: MakeVm) -> None:
    variables = (
        TaskVariable(name="PLAIN", value="literal"),
        TaskVariable(name="INSTANCE", xpath=f"{CI}/@id"),
        TaskVariable(name="UD", xpath=f"{CI}/@updateDomain"),
        TaskVariable(name="PORT", xpath=f"{CI}/Endpoints/Endpoint[@name='Api']/@port"),
        TaskVariable(
            name="GREETING", xpath=f"{CI}/ConfigurationSettings/ConfigurationSetting[@name='Greeting']/@value"
        ),
        TaskVariable(name="SCRATCH", xpath=f"{CI}/LocalResources/LocalResource[@name='Scratch']/@path"),
        TaskVariable(name="DEPLOYMENT", xpath="/RoleEnvironment/Deployment/@id"),
    )
    names = "|".join(v.name for v in variables)
    vm = make_vm(
        role(
            StartupTask(command_line=f"env | grep -E '^({names})=' | sort > vars.txt", environment=variables),
            local_storage=(LocalStorage(name="Scratch", size_in_mb=10),),
        )
    )
    vm.write("worker.py", WORKER)
    config = vm.config(values={"Greeting": "hello world"}, endpoints={"Api": ("tcp", 8123)})
    async with boot(vm, config) as booted:
        await booted.wait_for("ReadyRole")
    found = dict(line.split("=", 1) for line in (vm.disk.approot / "vars.txt").read_text().splitlines())
    assert found == {
        "PLAIN": "literal",
        "INSTANCE": "Worker_IN_0",
        "UD": "1",
        "PORT": "8123",
        "GREETING": "hello world",
        "SCRATCH": str(vm.disk.local_resource("Scratch")),
        "DEPLOYMENT": "d0c5e1f2",
    }


async def test_an_unresolvable_variable_blocks_the_instance(make_vm: MakeVm) -> None:
    missing = TaskVariable(
        name="KEY", xpath=f"{CI}/ConfigurationSettings/ConfigurationSetting[@name='Key']/@value"
    )
    vm = make_vm(role(StartupTask(command_line="true", environment=(missing,))))
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config()) as booted:
        failed = await booted.wait_for("FailedStartingRole")
    assert "task 0" in failed.detail and "'Key'" in failed.detail


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_limited_tasks_run_as_the_vms_account_and_elevated_ones_as_root(make_vm: MakeVm) -> None:
    vm = make_vm(
        role(
            StartupTask(command_line="id -u"),
            StartupTask(command_line="id -u", execution_context="elevated"),
        )
    )
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config(vm_uid=VM_UID)) as booted:
        await booted.wait_for("ReadyRole")
    logs = vm.disk.diagnostic_store / "StartupTasks"
    assert (logs / "0.log").read_text().strip() == str(VM_UID)
    assert (logs / "1.log").read_text().strip() == "0"


async def test_a_foreground_task_that_never_exits_is_killed_at_the_stop_deadline(make_vm: MakeVm) -> None:
    vm = make_vm(role(StartupTask(command_line="echo $$ > fg.pid; exec sleep 60", task_type="foreground")))
    vm.write("worker.py", WORKER)
    settings = msgspec.structs.replace(FAST, on_stop_timeout=1.0)
    async with boot(vm, vm.config(settings=settings)) as booted:
        await booted.wait_for("ReadyRole")
        foreground = int(await wait_file(vm.disk.approot / "fg.pid"))
        started = anyio.current_time()
        await booted.ref.stop()
        took = anyio.current_time() - started
    assert 1.0 <= took < 5.0
    await wait_gone(foreground)
    assert "killing task 0 (foreground, limited)" in booted.log()


async def test_tasks_and_the_role_host_die_with_a_killed_bootstrapper(make_vm: MakeVm) -> None:
    vm = make_vm(role(StartupTask(command_line="echo $$ > bg.pid; exec sleep 60", task_type="background")))
    vm.write("worker.py", WORKER)
    async with boot(vm, vm.config()) as booted:
        ready = await booted.wait_for("ReadyRole")
        background = int(await wait_file(vm.disk.approot / "bg.pid"))
        assert booted.ref.pid is not None
        os.kill(booted.ref.pid, signal.SIGKILL)  # no on_stop, no clean-up: only the lifelines
        await booted.ref.join()
    await wait_gone(background)
    await wait_gone(ready.role_pid)
