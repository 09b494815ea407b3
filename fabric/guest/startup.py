"""Startup tasks (seed G, step 7): simple ones in order, background and foreground ones left running.

Each task runs as ``/bin/sh -c COMMAND`` in E/approot, in its own process group led by
``fabric.guest.task_leader``, with its output in ``DiagnosticStore/StartupTasks/<n>.log``.
Limited tasks run as the VM's account in the VM's sandbox when there is one (see
fabric.guest.account), with TEMP at the role's RoleTemp; elevated ones as we are. Closing the
tasks (the VM stops) gives foreground tasks until a deadline to exit, then kills every task's
whole process group; if the bootstrapper dies instead, the leaders kill their groups themselves.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import msgspec

from actors import KILL_REAP_TIMEOUT, Sandbox
from fabric.guest.account import own, role_temp_env
from fabric.guest.disk import VmDisk
from fabric.model.definition import StartupTask, TaskType, TaskVariable
from fabric.model.environment import EndpointInfo as DocEndpoint
from fabric.model.environment import LocalResourceInfo as DocResource
from fabric.model.environment import RoleEnvironmentDocument, resolve_role_instance_value
from fabric.model.errors import XPathError
from roles.protocol import RoleEnvironmentData

#: After SIGTERM to a task's group, how long before SIGKILL.
TASK_TERM_GRACE = 1.0


class StartupTaskError(Exception):
    """A startup task blocks the instance (failed, could not start, or a variable is wrong)."""


class TaskPlan(msgspec.Struct, frozen=True, kw_only=True):
    """One startup task as the bootstrapper runs it, after plugins were expanded into tasks.

    Attributes:
        command_line: run with ``/bin/sh -c`` in E/approot.
        task_type: simple (must exit 0 before the next starts), background or foreground.
        elevated: run as we are; otherwise as the VM's account, when there is one.
        variables: environment variables, each a literal value or a RoleInstanceValue xpath.
        origin: "" for the role's own tasks, else the plugin that added it.
    """

    command_line: str
    task_type: TaskType = "simple"
    elevated: bool = False
    variables: tuple[TaskVariable, ...] = ()
    origin: str = ""

    @classmethod
    def from_definition(cls, task: StartupTask) -> TaskPlan:
        """The plan of a Startup/Task element of the role's definition."""
        return cls(
            command_line=task.command_line,
            task_type=task.task_type,
            elevated=task.execution_context == "elevated",
            variables=task.environment,
        )

    def describe(self, index: int) -> str:
        """``task 2 (simple, limited) 'install.sh'``, for logs and status details."""
        context = "elevated" if self.elevated else "limited"
        source = f", {self.origin} plugin" if self.origin else ""
        return f"task {index} ({self.task_type}, {context}{source}) {self.command_line!r}"


def environment_document(env: RoleEnvironmentData) -> RoleEnvironmentDocument:
    """The /RoleEnvironment document of an instance, which RoleInstanceValue xpaths read."""
    me = env.current_instance
    return RoleEnvironmentDocument(
        deployment_id=env.deployment_id,
        emulated=env.emulated,
        instance_id=me.id,
        role_name=me.role_name,
        fault_domain=me.fault_domain,
        update_domain=me.update_domain,
        configuration_settings=dict(env.settings),
        local_resources={
            name: DocResource(path=res.root_path, size_in_mb=res.maximum_size_mb)
            for name, res in env.local_resources.items()
        },
        endpoints={
            name: DocEndpoint(address=ep.host, port=ep.port, protocol=ep.protocol)
            for name, ep in me.endpoints.items()
        },
    )


def resolve_variables(variables: tuple[TaskVariable, ...], doc: RoleEnvironmentDocument) -> dict[str, str]:
    """Environment variables by name: literal values as given, xpaths resolved against ``doc``.

    Raises:
        XPathError: an xpath is not supported or names something the instance does not have.
    """
    resolved: dict[str, str] = {}
    for variable in variables:
        if variable.xpath is not None:
            resolved[variable.name] = resolve_role_instance_value(variable.xpath, doc)
        else:
            resolved[variable.name] = variable.value or ""
    return resolved


@dataclass
class RunningTask:
    """A started task: its process (the group leader), log and, once ended, its exit code."""

    index: int
    plan: TaskPlan
    process: anyio.abc.Process
    log_path: Path
    ended: anyio.Event = field(default_factory=anyio.Event)

    @property
    def returncode(self) -> int | None:
        """The exit code, None while it runs."""
        return self.process.returncode


class StartupTasks:
    """Runs a role's startup tasks and owns every process they start (see the module docstring).

    Use ``open_startup_tasks``; ``log`` receives one line per event for WaHostBootstrapper.log.
    """

    def __init__(
        self,
        *,
        disk: VmDisk,
        environment: RoleEnvironmentData,
        vm_uid: int | None,
        sandbox: Sandbox | None,
        python: str,
        simple_timeout: float,
        log: Callable[[str], None],
        task_group: anyio.abc.TaskGroup,
        lifeline: int,
    ) -> None:
        self.disk = disk
        self.environment = environment
        self.vm_uid = vm_uid
        self.sandbox = sandbox
        self.python = python
        self.simple_timeout = simple_timeout
        self.log = log
        self.tasks: list[RunningTask] = []
        self._task_group = task_group
        self._lifeline = lifeline

    @property
    def log_dir(self) -> Path:
        """DiagnosticStore/StartupTasks: one ``<n>.log`` per task."""
        return self.disk.diagnostic_store / "StartupTasks"

    def running(self, task_type: TaskType) -> list[RunningTask]:
        """The tasks of a type that have not exited yet."""
        return [t for t in self.tasks if t.plan.task_type == task_type and t.returncode is None]

    async def run(self, plans: list[TaskPlan]) -> None:
        """Run the tasks in order; return once every simple task exited 0.

        Raises:
            StartupTaskError: a task could not start, a simple one exited non-zero (or overran
                simple_task_timeout), or a variable could not be resolved; the message names
                the task, its command line, the exit code and the log file.
        """
        doc = environment_document(self.environment)
        for index, plan in enumerate(plans):
            task = await self._start(index, plan, doc)
            if plan.task_type != "simple":
                continue
            with anyio.move_on_after(self.simple_timeout or None) as scope:
                await task.ended.wait()
            if scope.cancelled_caught:
                await self._kill(task)
                raise StartupTaskError(
                    f"{plan.describe(index)} did not finish within {self.simple_timeout:g} s "
                    f"(simple_task_timeout) and was killed; see {task.log_path}"
                )
            if task.returncode != 0:
                raise StartupTaskError(
                    f"{plan.describe(index)} exited with code {task.returncode}; see {task.log_path}"
                )

    async def _start(self, index: int, plan: TaskPlan, doc: RoleEnvironmentDocument) -> RunningTask:
        try:
            variables = resolve_variables(plan.variables, doc)
        except XPathError as exc:
            raise StartupTaskError(f"{plan.describe(index)}: environment variable: {exc}") from None
        env = {**os.environ, **role_temp_env(self.disk), **variables}
        user = None if plan.elevated else self.vm_uid
        command = [self.python, "-m", "fabric.guest.task_leader", str(self._lifeline)]
        if user is not None:
            command += ["--user", str(user)]
            if self.sandbox is not None:
                env.update(self.sandbox.as_environ())
        command += ["--", "/bin/sh", "-c", plan.command_line]
        log_path = self.log_dir / f"{index}.log"
        try:
            process = await self._launch(command, env, log_path, user)
        except OSError as exc:
            raise StartupTaskError(f"{plan.describe(index)} could not start: {exc}") from None
        task = RunningTask(index, plan, process, log_path)
        self.tasks.append(task)
        shown = ", ".join(variables)  # names only: values may be secrets (connection strings)
        self.log(
            f"started {plan.describe(index)} as pid {process.pid}"
            + (f" as uid {user}" if user is not None else "")
            + (f" with variables {shown}" if shown else "")
            + f"; output in {log_path}"
        )
        self._task_group.start_soon(self._watch, task)
        return task

    async def _launch(
        self, command: list[str], env: dict[str, str], log_path: Path, user: int | None
    ) -> anyio.abc.Process:
        """Start the task's leader in a new session, its output appended to ``log_path``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # A local file open; the child keeps its own descriptor.
        with open(log_path, "ab", buffering=0) as out:  # noqa: ASYNC230
            if user is not None and os.geteuid() == 0:
                own(log_path, user, 0o600)
            return await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=self.disk.approot,
                env=env,
                start_new_session=True,
                pass_fds=(self._lifeline,),
            )

    async def _watch(self, task: RunningTask) -> None:
        code = await task.process.wait()
        self.log(f"{task.plan.describe(task.index)} exited with code {code}")
        task.ended.set()

    async def _kill(self, task: RunningTask) -> None:
        """TERM the task's group, give it a moment, then KILL whatever is left and reap."""
        pgid = task.process.pid
        _signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(TASK_TERM_GRACE):
            await task.process.wait()
        _signal_group(pgid, signal.SIGKILL)
        await task.process.wait()

    def close_budget(self, foreground_deadline: float) -> float:
        """The most aclose(foreground_deadline) takes: the foreground wait, then each task's kill."""
        wait = max(0.0, foreground_deadline - anyio.current_time())
        return wait + len(self.tasks) * (TASK_TERM_GRACE + KILL_REAP_TIMEOUT)

    async def aclose(self, foreground_deadline: float) -> None:
        """Wait for foreground tasks until ``foreground_deadline`` (anyio time), then kill all."""
        for task in self.running("foreground"):
            self.log(f"waiting for foreground {task.plan.describe(task.index)} to exit")
            with anyio.move_on_after(max(0.0, foreground_deadline - anyio.current_time())):
                await task.ended.wait()
        for task in self.tasks:
            if task.returncode is None:
                self.log(f"killing {task.plan.describe(task.index)} and its process group")
            # A finished task's group may still hold what it started in the background.
            await self._kill(task)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@asynccontextmanager
async def open_startup_tasks(
    *,
    disk: VmDisk,
    environment: RoleEnvironmentData,
    vm_uid: int | None,
    sandbox: Sandbox | None = None,
    python: str = "",
    simple_timeout: float = 0.0,
    log: Callable[[str], None],
    foreground_deadline: Callable[[], float] = lambda: anyio.current_time(),
) -> AsyncIterator[StartupTasks]:
    """Own the startup tasks of one bootstrapper for the block's duration.

    On leaving the block, foreground tasks get until ``foreground_deadline()`` to exit (none
    when it is infinite: no stop began), then every task's process group is killed and reaped,
    even if the block was cancelled.
    """
    read_end, write_end = os.pipe()
    try:
        async with anyio.create_task_group() as task_group:
            tasks = StartupTasks(
                disk=disk,
                environment=environment,
                vm_uid=vm_uid,
                sandbox=sandbox,
                python=python or sys.executable,
                simple_timeout=simple_timeout,
                log=log,
                task_group=task_group,
                lifeline=read_end,
            )
            try:
                yield tasks
            finally:
                deadline = foreground_deadline()
                if deadline == math.inf:  # no stop began: the bootstrapper failed or was cancelled
                    deadline = anyio.current_time()
                # Shielded, so that a cancelled block still kills and reaps every task; bounded
                # by the foreground wait and each task's kill.
                with anyio.move_on_after(tasks.close_budget(deadline), shield=True):
                    await tasks.aclose(deadline)
                task_group.cancel_scope.cancel()
    finally:
        os.close(write_end)
        os.close(read_end)
