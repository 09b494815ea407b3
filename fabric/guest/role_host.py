"""The role host (seed E.2, E.3, I, J, step 9): start it, watch it, restart it, map it to statuses.

One role host process runs at a time (WaWorkerHost, WaIISHost or WaWebHost, as process
actors). What it reports (RoleHostState) and how it answers StatusCheck become the instance's
status: StartingRole, ReadyRole, BusyRole, UnresponsiveRole, StoppingRole. A host that fails
is restarted with exponential backoff (RestartingRole, then CyclingRole, or FailedStartingRole
when it never got to Ready); a recycle (run returned, request_recycle, RecycleRole, a
cancelled change, or an unresponsive host) restarts it at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from actors import ActorDead, ActorError, ActorSystem, AskTimeout, ProcessExited, Ref, Request, Template
from fabric.guest.disk import VmDisk
from fabric.guest.messages import ApplyEnvironment, BootstrapConfig, EnvironmentApplied
from fabric.guest.role_launch import (
    HOST_NAMES,
    HostKind,
    Relay,
    host_config,
    host_kind,
    host_target,
    process_options,
    start_template,
)
from fabric.model.errors import XPathError
from fabric.model.status import RoleStatus
from roles.protocol import (
    EnvironmentChanged,
    EnvironmentChanging,
    RoleEnvironmentData,
    RoleHostPhase,
    RoleHostState,
    SimultaneousChanged,
    SimultaneousChanging,
    SiteInfo,
    StatusCheck,
)

StatusSink = Callable[[RoleStatus, str], None]
Log = Callable[[str], None]
#: The answer type of a request to a role host.
Answer = TypeVar("Answer")


@dataclass
class _Incarnation:
    """One role host process, from spawn to exit."""

    number: int
    ref: Ref | None = None
    pid: int = 0
    phase: RoleHostPhase | None = None
    reached_ready: bool = False
    failure: str = ""
    recycle: str | None = None  # why we restart it at once, when we do
    busy: bool = False
    unresponsive_since: float | None = None
    ended: bool = False
    #: set once its spawn has returned (or failed): a host may report ready before that
    spawned: anyio.Event = field(default_factory=anyio.Event)


class RoleHost:
    """Keeps the role host running; see the module docstring."""

    def __init__(
        self,
        *,
        system: ActorSystem,
        config: BootstrapConfig,
        disk: VmDisk,
        log: Log,
        set_status: StatusSink,
        sites: list[SiteInfo],
        listen_fds: dict[str, int],
    ) -> None:
        self.system = system
        self.config = config
        self.settings = config.settings
        self.disk = disk
        self.log = log
        self.set_status = set_status
        self.kind = host_kind(config.role)
        self.name = HOST_NAMES[self.kind]
        self.sites = sites
        self.listen_fds = listen_fds
        self.environment: RoleEnvironmentData = config.environment
        self.restarts = 0
        self.current = _Incarnation(0)
        #: extra targets for RoleEnvironment events (the running W3WP)
        self.event_targets: Callable[[], list[Ref]] = list
        self.on_recycle: Callable[[], None] = lambda: None
        #: tell the current status again (the pid or restart count changed)
        self.refresh: Callable[[], None] = lambda: None
        self.relays: dict[Ref, Ref] = {}
        #: the warm template limited hosts are forked from (see role_launch.start_template)
        self.template: Template | None = None
        self._template_failed = False

    # -- what a role host is started with ----------------------------------------------------

    async def spawn(self, kind: HostKind, deliver: Callable[[Any], None], listen_fds: dict[str, int]) -> Ref:
        """Start a host process whose reports go to ``deliver``; return its Ref once started.

        ``listen_fds`` are listening sockets it inherits, by endpoint name.
        """
        options = process_options(self.config, self.disk, self.environment, kind, tuple(listen_fds.values()))
        if options.run_as is not None:
            options = dataclasses.replace(options, template=await self._template())
        relay = await self.system.spawn(lambda: Relay(deliver), name=f"{HOST_NAMES[kind]}-events")
        try:
            ref = await self.system.spawn_process(
                host_target(kind),
                name=HOST_NAMES[kind],
                args=(
                    host_config(
                        self.config,
                        self.disk,
                        self.environment,
                        kind,
                        sites=self.sites,
                        listen_fds=listen_fds,
                    ),
                ),
                parent=relay,
                options=options,
            )
        except BaseException:
            relay.request_stop()
            raise
        self.relays[ref] = relay
        return ref

    async def _template(self) -> Template | None:
        """The running template, started again if it died; None where none can run (the
        host is then exec'd, as it would be without templates)."""
        if self.template is not None and self.template.alive:
            return self.template
        if self._template_failed:
            return None
        if self.template is not None:
            self.log(f"the role host template (pid {self.template.pid}) is gone: starting another")
            await self.template.close()
            self.template = None
        try:
            self.template = await start_template(self.config, self.disk, self.kind)
        except OSError as exc:
            self._template_failed = True
            self.log(f"no role host template ({exc}): role hosts are exec'd")
            return None
        if self.template is not None:
            self.log(f"started the role host template (pid {self.template.pid})")
        return self.template

    def release(self, ref: Ref) -> None:
        """A host or worker process is gone: stop the actor that relayed its reports."""
        relay = self.relays.pop(ref, None)
        if relay is not None:
            relay.request_stop()

    # -- the restart loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run the role host for ever: restart it after every exit (see the module docstring)."""
        s = self.settings
        failures = 0
        ready_in_streak = False
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._check_status)
            number = 0
            while True:
                number += 1
                started = anyio.current_time()
                incarnation = self.current = _Incarnation(number)
                await self._run_once(incarnation)
                if incarnation.recycle is not None:
                    self.restarts += 1
                    continue
                if anyio.current_time() - started >= s.role_restart_reset:
                    failures, ready_in_streak = 0, False
                failures += 1
                ready_in_streak = ready_in_streak or incarnation.reached_ready
                # The first failure after a healthy run restarts at once (a one-off crash should
                # cost no more than a process start); failures in a row back off exponentially.
                delay = (
                    0.0
                    if failures == 1
                    else min(
                        s.role_restart_initial * s.role_restart_factor ** (failures - 2), s.role_restart_max
                    )
                )
                status: RoleStatus = "RestartingRole"
                if failures >= s.role_cycling_after:
                    status = "CyclingRole" if ready_in_streak else "FailedStartingRole"
                self.restarts += 1
                why = (
                    f" ({failures} failures in a row, each under role_restart_reset "
                    f"{s.role_restart_reset:g} s after its start: restarts back off)"
                    if failures > 1
                    else " (1 failure in a row)"
                )
                self.set_status(
                    status, f"{incarnation.failure}; restart {self.restarts} in {delay:.2f} s{why}"
                )
                await anyio.sleep(delay)

    async def _run_once(self, inc: _Incarnation) -> None:
        self.set_status("StartingRole", f"starting {self.name}")
        try:
            ref = await self.spawn(self.kind, lambda m: self._on_message(inc, m), self.listen_fds)
        except (ActorError, ProcessExited, XPathError, OSError) as exc:
            inc.failure = f"{self.name} could not start: {exc}"
            self.log(inc.failure)
            inc.spawned.set()
            return
        inc.ref, inc.pid = ref, ref.pid or inc.pid
        inc.spawned.set()
        self.log(f"started {self.name} (pid {inc.pid})")
        self.refresh()  # the status told so far may not carry the pid yet
        if inc.recycle is not None:
            ref.request_stop()
        reason = await ref.join()
        self.release(ref)
        how = "exited normally" if reason is None else str(reason)
        self.log(f"{self.name} (pid {inc.pid}) {how}")
        inc.ref, inc.pid, inc.ended = None, 0, True
        if inc.recycle is None and reason is None and inc.phase in ("recycling", "stopping"):
            inc.recycle = "the role recycled"
        if inc.recycle is None and not inc.failure:
            inc.failure = f"{self.name} {how}" if reason is not None else f"{self.name} exited unasked"
        elif inc.recycle is None:
            inc.failure = f"{self.name} failed: {inc.failure}"

    def _on_message(self, inc: _Incarnation, message: Any) -> None:
        if not isinstance(message, RoleHostState) or inc is not self.current or inc.ended:
            return  # a late report from a host that is gone
        inc.phase = message.phase
        inc.pid = inc.pid or message.pid
        detail = message.detail
        self.log(f"{self.name} (pid {message.pid}) {message.phase}" + (f": {detail}" if detail else ""))
        match message.phase:
            case "starting":
                self.set_status("StartingRole", "OnStart is running")
            case "ready":
                inc.reached_ready, inc.busy = True, False
                self.set_status("ReadyRole", "")
            case "recycling":
                self.recycle(inc, f"the role is recycling: {detail or 'Run returned'}")
            case "stopping":
                self.set_status("StoppingRole", "OnStop is running")
            case "failed":
                inc.failure = detail or "failed"

    # -- recycles -------------------------------------------------------------------------------

    def recycle(self, inc: _Incarnation | None, why: str) -> None:
        """Stop the host by its ladder (stopping, on_stop) and start it again without backoff."""
        inc = inc or self.current
        if inc is not self.current or inc.recycle is not None or inc.failure:
            return
        inc.recycle = why
        self.log(f"recycling {self.name}: {why}")
        self.set_status("StoppingRole", why)
        self.on_recycle()
        if inc.ref is not None:
            inc.ref.request_stop()

    def _kill(self, inc: _Incarnation, why: str) -> None:
        """Recycle a host that cannot stop politely: SIGKILL its process group."""
        inc.recycle = why
        self.log(f"killing {self.name} (pid {inc.pid}): {why}")
        self.set_status("StoppingRole", why)
        if inc.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(inc.pid, signal.SIGKILL)

    # -- StatusCheck ----------------------------------------------------------------------------

    async def _check_status(self) -> None:
        s = self.settings
        while True:
            await anyio.sleep(s.status_check_interval)
            inc = self.current
            ref = inc.ref
            if inc.recycle is not None or inc.phase not in ("starting", "ready"):
                continue
            timeout = s.status_check_timeout
            if inc.unresponsive_since is not None:
                left = inc.unresponsive_since + s.role_unresponsive_timeout - anyio.current_time()
                timeout = max(0.01, min(timeout, left))
            if ref is None:
                # It reported (it runs: it may even be Ready) but its start handshake has not
                # reached us, so there is no Ref to ask yet. A host that stops right after its
                # report never completes it: give it a StatusCheck's time, as a running host
                # gets to answer, instead of the whole start timeout.
                if not inc.spawned.is_set():
                    with anyio.move_on_after(timeout):
                        await inc.spawned.wait()
                    if not inc.spawned.is_set():
                        self._unanswered(inc, f"did not complete its start within {timeout:g} s")
                continue
            try:
                result = await ref.ask(StatusCheck(), timeout=timeout)
            except AskTimeout:
                self._unanswered(inc)
                continue
            except (ActorDead, ActorError):
                continue
            if inc is not self.current or inc.recycle is not None:
                continue
            was_unresponsive = inc.unresponsive_since is not None
            inc.unresponsive_since = None
            busy = bool(getattr(result, "busy", False))
            if inc.phase == "ready" and (busy != inc.busy or was_unresponsive):
                inc.busy = busy
                if busy:
                    self.set_status("BusyRole", "a status_check handler called set_busy()")
                else:
                    self.set_status("ReadyRole", "")
            elif was_unresponsive:
                self.set_status("StartingRole", "OnStart is running")

    def _unanswered(self, inc: _Incarnation, what: str = "") -> None:
        s = self.settings
        if inc is not self.current or inc.recycle is not None:
            return
        now = anyio.current_time()
        if inc.unresponsive_since is None:
            inc.unresponsive_since = now
            what = what or f"did not answer StatusCheck within {s.status_check_timeout:g} s"
            self.set_status("UnresponsiveRole", f"{self.name} {what}")
        elif now - inc.unresponsive_since >= s.role_unresponsive_timeout:
            self._kill(inc, f"unresponsive for {now - inc.unresponsive_since:.1f} s: recycling")

    # -- configuration changes ------------------------------------------------------------------

    async def apply(self, change: ApplyEnvironment) -> EnvironmentApplied:
        """Raise changing (or the Simultaneous pair) and changed; "applied" or "recycling"."""
        self.environment = change.environment
        inc = self.current
        if inc.ref is None and inc.phase is not None and not inc.ended:
            # It is running (it reported) but its spawn has not returned yet: the change must
            # reach this process, which was started with the environment before it.
            await inc.spawned.wait()
        targets = [r for r in [inc.ref, *self.event_targets()] if r is not None]
        if inc.ref is None or inc.recycle is not None:
            self.log("new environment recorded; the next role host start uses it")
            return "applied"
        timeout = self.settings.status_check_timeout
        changes = change.changes
        blast = self.environment.topology_change_discovery == "Blast"
        if blast and changes and all(c.kind == "topology" for c in changes):
            for ref in targets:
                await _ask_quietly(ref, SimultaneousChanging(changes=changes), timeout)
            for ref in targets:
                await _tell_quietly(ref, SimultaneousChanged(environment=self.environment, changes=changes))
            self.log(f"topology change applied at once (Blast): {_names(changes)}")
            return "applied"
        cancel = False
        for ref in targets:
            try:
                answer = await _ask_quietly(ref, EnvironmentChanging(changes=changes), timeout)
            except AskTimeout:
                self.log(f"no answer to changing within {timeout:g} s: recycling to apply the change")
                cancel = True
                continue
            cancel = cancel or bool(getattr(answer, "cancel", False))
        if cancel:
            self.recycle(inc, f"a changing handler cancelled the change ({_names(changes)}): recycling")
            return "recycling"
        for ref in targets:
            await _tell_quietly(ref, EnvironmentChanged(environment=self.environment, changes=changes))
        self.log(f"environment changed: {_names(changes)}")
        return "applied"

    # -- the end --------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop the running host by its ladder (call after cancelling ``run``)."""
        inc = self.current
        if inc.ref is not None:
            inc.recycle = inc.recycle or "the VM is stopping"
            self.log(f"stopping {self.name} (pid {inc.pid})")
            reason = await inc.ref.stop()
            self.log(f"{self.name} stopped" + (f": {reason}" if reason is not None else ""))
        for relay in self.relays.values():
            relay.request_stop()
        self.relays.clear()
        if self.template is not None:
            await self.template.close()
            self.template = None


def _names(changes: Any) -> str:
    return ", ".join(f"{c.kind} {c.name}" for c in changes) or "(nothing)"


async def _ask_quietly(ref: Ref, message: Request[Answer], timeout: float) -> Answer | None:
    try:
        return await ref.ask(message, timeout=timeout)
    except (ActorDead, ActorError):
        return None


async def _tell_quietly(ref: Ref, message: Any) -> None:
    with contextlib.suppress(ActorDead):
        await ref.tell(message)
