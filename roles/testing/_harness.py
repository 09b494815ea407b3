"""RoleHarness: run a RoleEntryPoint in this process, under the fabric's own role host code.

The role runs in the role host actor the fabric runs (WaWorkerHost, or WaIISHost for a web
role), spawned in an in-process actor system instead of a child process: the same lifecycle
(on_start, Ready and run, stopping and on_stop within on_stop_timeout, request_recycle), the
same events raised by the same messages, and the same failure messages the fabric logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast, overload

import anyio
import msgspec
from anyio.abc import TaskGroup

from actors import ActorDead, ActorSystem, Ref, open_system
from roles._threads import thread_wait_guard
from roles.entry_point import RoleEntryPoint
from roles.environment import RoleEnvironment
from roles.hosts._common import STOP_MARGIN, RoleFailed
from roles.protocol import (
    Change,
    EnvironmentChanged,
    EnvironmentChanging,
    RoleEnvironmentData,
    RoleHostConfig,
    RoleHostPhase,
    StatusCheck,
)

from ._clock import mock_clock_guard
from ._host import Observer, UnderTest, WebUnderTest, WorkerUnderTest
from ._spec import RoleSpec, role_spec


@dataclass(frozen=True)
class ChangeResult:
    """What a configuration change came to: the changes raised, and whether a changing handler
    cancelled it (the fabric would then recycle the instance to apply it; changed is not raised)."""

    changes: list[Change]
    cancelled: bool


E = TypeVar("E", bound=RoleEntryPoint)


class RoleHarness(Generic[E]):
    """One role instance run in this process; open it with ``open_role()``.

    Drive its life with ``start()`` and ``stop()``, raise its events with ``status_check()``,
    ``changing()``, ``changed()`` and ``change_settings()``, and watch ``phase``,
    ``recycle_requested`` and ``wait_for_recycle()``. A mistake in the role (no entry point,
    an exception, on_start answering something else than a bool) raises RoleFailed with the
    message the fabric logs, chained to the role's own exception when there is one.
    """

    def __init__(self, spec: RoleSpec, system: ActorSystem, tasks: TaskGroup) -> None:
        self.spec = spec
        self._system = system
        self._tasks = tasks
        self._environment = spec.environment
        self._observer = Observer()
        self._host: UnderTest | None = None
        self._ref: Ref | None = None
        self._sent = 0
        self._failure_seen = False
        #: on_start returned False: a failure the test was told of by start()'s answer
        self._refused = False

    # -- what a test reads ---------------------------------------------------------------------

    @property
    def environment(self) -> RoleEnvironmentData:
        """What RoleEnvironment answers: settings, local storage folders, endpoints, roles."""
        return self._environment

    @property
    def entry(self) -> E:
        """The role's RoleEntryPoint object (an instance of the class given to the harness).

        Raises:
            RuntimeError: start() has not created it (not called yet, or the role failed first).
        """
        entry = self._host.entry if self._host is not None else None
        if entry is None:
            raise RuntimeError("the role's entry point is not created yet: call start() first")
        return cast(E, entry)

    @property
    def phase(self) -> str:
        """The host's last report: "new" before start(), then starting, ready, recycling,
        stopping or failed, and "stopped" once the host is gone."""
        if self._host is None:
            return "new"
        last = self._observer.reports[-1][0] if self._observer.reports else "starting"
        return "stopped" if self._gone and last != "failed" else last

    @property
    def reports(self) -> list[tuple[str, str]]:
        """Every (phase, detail) the host reported, in order, as the bootstrapper hears them."""
        return list(self._observer.reports)

    @property
    def log(self) -> list[str]:
        """The host's log lines (``INFO calling on_start``...), as the fabric writes them."""
        return list(self._observer.lines)

    @property
    def recycle_requested(self) -> bool:
        """The role called RoleEnvironment.request_recycle()."""
        host = self._host
        return host is not None and hasattr(host, "recycle_requested") and host.recycle_requested.is_set()

    @property
    def _gone(self) -> bool:
        return self._observer.ended

    # -- its life ------------------------------------------------------------------------------

    async def start(self) -> bool:
        """Load the entry point and call on_start; return its answer.

        True: the role is Ready and ``run`` is running in a task. False: on_start returned
        False (the fabric would restart the role).

        Raises:
            RoleFailed: the role could not start (no RoleEntryPoint subclass, on_start raised or
                answered something else than a bool), with the message the fabric logs.
        """
        if self._host is not None:
            raise RuntimeError("start() was called already; open another harness to start again")
        spec = self.spec
        config = RoleHostConfig(
            kind="worker" if spec.kind == "worker" else "iis",
            app_root=spec.app_root,
            entry_module=spec.entry_module,
            environment=spec.environment,
            on_stop_timeout=spec.on_stop_timeout,
        )
        host_class = WorkerUnderTest if spec.kind == "worker" else WebUnderTest
        host = self._host = host_class(config, spec.entry_point, self._observer)
        logger = logging.getLogger(host.host_name)
        logger.addHandler(self._observer)
        self._restore_level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        ref = self._ref = await self._system.spawn(
            lambda: host, name=host.host_name, stop_timeout=spec.on_stop_timeout + STOP_MARGIN
        )
        self._tasks.start_soon(self._watch_end, ref)
        phase, detail = await self._wait_for("ready", "failed")
        if phase == "failed" and detail == "on_start returned False":
            self._refused = True
            return False
        self._raise_if_failed()
        return True

    async def stop(self) -> bool:
        """Stop the role as the fabric does: raise stopping, then call on_stop, both within
        on_stop_timeout. Returns True when they finished in time, False when they were cut.

        After a recycle (the role stopped itself) it returns at once, with the same answer.
        A plain-``def`` run that never returns is left running in its thread (the fabric would
        end the process): have it return once stopping is raised.

        Raises:
            RoleFailed: a stopping handler or on_stop raised (or the role had failed before).
        """
        ref, host = self._require_started()
        await ref.stop()
        self._observer.ended = True
        self._raise_if_failed()
        return not host.on_stop_overran

    async def _watch_end(self, ref: Ref) -> None:
        await ref.join()
        self._observer.ended = True
        self._observer.notify()

    async def wait_for_recycle(self) -> str:
        """Wait until the role recycles itself (``run`` returned, or it called
        request_recycle()) and its stopping and on_stop are done; return why, as the fabric
        logs it ("run returned" or "request_recycle() was called").

        Raises:
            RoleFailed: the role failed instead (run raised, say).
        """
        ref, _ = self._require_started()
        phase, detail = await self._wait_for("recycling", "failed", "stopping")
        self._raise_if_failed()
        if phase == "stopping":
            raise RuntimeError("the role was stopped (stop()), not recycled")
        await ref.join()
        self._observer.ended = True
        self._raise_if_failed()
        return detail

    # -- events --------------------------------------------------------------------------------

    async def status_check(self) -> bool:
        """Raise status_check, as the fabric does every status_check_interval; return True when
        a handler called ``args.set_busy()`` (the instance would leave load-balancer rotation)."""
        ref, _ = self._require_running()
        self._sent += 1
        result = await self._ask(ref, StatusCheck())
        return bool(result.busy)

    async def changing(self, changes: Iterable[Change]) -> bool:
        """Raise changing with ``changes``; return True when a handler set ``args.cancel``.

        The fabric would then recycle the instance to apply the change (and it gives the
        handlers status_check_timeout to answer, treating silence as a cancel; here the test's
        own time limit applies).
        """
        ref, _ = self._require_running()
        self._sent += 1
        result = await self._ask(ref, EnvironmentChanging(changes=list(changes)))
        return bool(result.cancel)

    async def _ask(self, ref: Ref, message: Any) -> Any:
        """Ask the host as the bootstrapper does (no time limit here: the test has its own)."""
        try:
            result = await ref.ask(message, timeout=None)
        except ActorDead:
            self._raise_if_failed()
            raise RuntimeError(f"the role ended before it answered {type(message).__name__}") from None
        self._raise_if_failed()
        return result

    async def changed(
        self, changes: Iterable[Change], environment: RoleEnvironmentData | None = None
    ) -> None:
        """Put ``environment`` in force (RoleEnvironment answers from it), then raise changed."""
        ref, _ = self._require_running()
        new = environment if environment is not None else self._environment
        self._sent += 1
        with contextlib.suppress(ActorDead):  # it failed meanwhile: raised below
            await ref.tell(EnvironmentChanged(environment=new, changes=list(changes)))
        while self._observer.handled < self._sent and not self._gone:
            await self._observer.news.wait()
        self._environment = new
        self._raise_if_failed()

    async def change_settings(self, values: Mapping[str, str]) -> ChangeResult:
        """Change configuration settings as a new .cscfg would: raise changing (handlers still
        read the old values); unless a handler cancelled, put the new values in force and raise
        changed. Settings whose value does not change are left out of the changes.

        Raises:
            ValueError: a name the role does not declare (the fabric refuses such a configuration).
        """
        declared = self._environment.settings
        unknown = sorted(set(values) - set(declared))
        if unknown:
            raise ValueError(
                f"setting(s) {', '.join(unknown)} not declared by the role; "
                f"declared: {', '.join(sorted(declared)) or '(none)'}"
            )
        changes = [Change(kind="setting", name=n) for n in sorted(values) if values[n] != declared[n]]
        if not changes:
            return ChangeResult(changes=[], cancelled=False)
        if await self.changing(changes):
            return ChangeResult(changes=changes, cancelled=True)
        environment = msgspec.structs.replace(self._environment, settings={**declared, **values})
        await self.changed(changes, environment)
        return ChangeResult(changes=changes, cancelled=False)

    # -- waiting and failing -------------------------------------------------------------------

    def _require_started(self) -> tuple[Ref, UnderTest]:
        if self._ref is None or self._host is None:
            raise RuntimeError("the role is not started: call start() first")
        return self._ref, self._host

    def _require_running(self) -> tuple[Ref, UnderTest]:
        ref, host = self._require_started()
        self._raise_if_failed()
        if self._gone:
            raise RuntimeError(f"the role is not running any more ({self.phase}): events cannot reach it")
        return ref, host

    async def _wait_for(self, *phases: str) -> tuple[RoleHostPhase, str]:
        seen = 0
        while True:
            reports = self._observer.reports
            for phase, detail in reports[seen:]:
                if phase in phases:
                    return phase, detail
            seen = len(reports)
            if self._gone:
                raise RuntimeError(f"the role host ended without reporting {' or '.join(phases)}")
            await self._observer.news.wait()

    def _failure(self) -> str | None:
        for phase, detail in self._observer.reports:
            if phase == "failed":
                return None if self._refused else detail
        return None

    def _raise_if_failed(self) -> None:
        detail = self._failure()
        if detail is None:
            return
        self._failure_seen = True
        raise RoleFailed(detail) from self._observer.failure_cause

    def _unseen_failure(self) -> RoleFailed | None:
        detail = self._failure()
        if detail is None or self._failure_seen:
            return None
        error = RoleFailed(detail)
        error.__cause__ = self._observer.failure_cause
        return error

    async def _close(self) -> None:
        if self._ref is not None and not self._gone:
            # Shielded, so that a cancelled test still stops its role; bounded by the host's stop
            # budget (its stop_timeout for the message in hand, then as long for on_stop).
            with anyio.move_on_after(2 * (self.spec.on_stop_timeout + STOP_MARGIN), shield=True):
                await self._ref.stop()
        if self._host is not None:
            logger = logging.getLogger(self._host.host_name)
            logger.removeHandler(self._observer)
            logger.setLevel(self._restore_level)


#: a harness is open: RoleEnvironment, a process-wide object, is taken (from the open on)
_in_use = False


def _set_in_use(value: bool) -> None:
    global _in_use
    _in_use = value


@overload
def open_role(
    entry_point: type[E], *, root: str | os.PathLike[str] | None = None, **keywords: Any
) -> AbstractAsyncContextManager[RoleHarness[E]]: ...


@overload
def open_role(
    entry_point: str | os.PathLike[str] | RoleSpec,
    *,
    root: str | os.PathLike[str] | None = None,
    **keywords: Any,
) -> AbstractAsyncContextManager[RoleHarness[RoleEntryPoint]]: ...


def open_role(
    entry_point: type[RoleEntryPoint] | str | os.PathLike[str] | RoleSpec,
    *,
    root: str | os.PathLike[str] | None = None,
    **keywords: Any,
) -> AbstractAsyncContextManager[RoleHarness[Any]]:
    """Open a harness for one role instance; on the way out the role is stopped (stopping and
    on_stop, if it is still running) and RoleEnvironment is "not in a role" again.

    ``entry_point`` is the RoleEntryPoint subclass, the role's code folder, or a RoleSpec
    (``fabric.testing.role_spec_from_service`` builds one from a csdef and cscfg). The
    keywords are those of ``role_spec()``: settings, local_storage, endpoints, instances,
    index, other_roles, role, kind, on_stop_timeout... LocalStorage folders go under ``root``
    (a temporary folder, removed at the end, when None).

    A failure of the role that no call of the test has raised (run raising while the test
    waits elsewhere, say) is raised as RoleFailed when the block ends.

    Raises:
        RuntimeError: RoleEnvironment is taken (another harness is open in this process).
    """
    return _open_role(entry_point, root, keywords)


@asynccontextmanager
async def _open_role(
    entry_point: type[RoleEntryPoint] | str | os.PathLike[str] | RoleSpec,
    root: str | os.PathLike[str] | None,
    keywords: dict[str, Any],
) -> AsyncIterator[RoleHarness[Any]]:
    if RoleEnvironment.is_available or _in_use:
        raise RuntimeError(
            "RoleEnvironment is already in use in this process (another role harness is open): "
            "one role instance per process, as in the fabric"
        )
    made_root = None
    if isinstance(entry_point, RoleSpec):
        if keywords:
            raise TypeError(f"a RoleSpec takes no more keywords (got {', '.join(sorted(keywords))})")
        spec = entry_point
    else:
        if root is None:
            root = made_root = tempfile.mkdtemp(prefix="reddog-role-")
        spec = role_spec(entry_point, root=root, **keywords)
    _set_in_use(True)
    path_before = list(sys.path)
    modules_before = set(sys.modules)
    guard = mock_clock_guard()
    token = thread_wait_guard.set(guard)
    harness: RoleHarness[Any] | None = None
    failed: Exception | None = None
    try:
        async with open_system() as system, anyio.create_task_group() as tasks:
            harness = RoleHarness(spec, system, tasks)
            try:
                yield harness
            except Exception as error:
                # Raised again below, out of the task groups: a failed assertion reaches the
                # test as itself, not wrapped in an exception group.
                failed = error
            finally:
                await harness._close()
                tasks.cancel_scope.cancel()
    finally:
        thread_wait_guard.reset(token)
        RoleEnvironment._detach()
        _set_in_use(False)
        sys.path[:] = path_before
        _forget_role_modules(modules_before, spec.app_root)
        if made_root is not None:
            shutil.rmtree(made_root, ignore_errors=True)
    if failed is not None:
        raise failed
    unseen = harness._unseen_failure() if harness is not None else None
    if unseen is not None:
        raise unseen


def _forget_role_modules(before: set[str], app_root: str) -> None:
    """Unload the modules imported from the role's code folder, so that another role's module
    of the same name (worker.py) can be loaded by the next harness."""
    if not app_root:
        return
    root = Path(app_root).resolve()
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None)
        with contextlib.suppress(ValueError, OSError):
            if file and Path(file).resolve().is_relative_to(root):
                del sys.modules[name]
