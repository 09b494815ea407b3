"""What every role host process shares: RoleEnvironment set-up, phase reports, raising events.

A role host is a process actor built with one RoleHostConfig. Its on_start returns at once
(the bootstrapper's spawn waits for it) and runs the role in a background task; the base class
here answers the bootstrapper's StatusCheck and EnvironmentChanging asks and its
EnvironmentChanged and Simultaneous* tells by raising the RoleEnvironment events in this
process, and reports every phase to its parent with a RoleHostState tell.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Any, ClassVar, Final, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from actors import Actor, ActorDead
from roles.environment import RoleEnvironment
from roles.events import (
    Event,
    RoleEnvironmentChangedEventArgs,
    RoleEnvironmentChangingEventArgs,
    RoleInstanceStatusCheckEventArgs,
    SimultaneousChangedEventArgs,
    SimultaneousChangingEventArgs,
)
from roles.protocol import (
    ChangingResult,
    EnvironmentChanged,
    EnvironmentChanging,
    RoleHostConfig,
    RoleHostPhase,
    RoleHostState,
    SimultaneousChanged,
    SimultaneousChanging,
    StatusCheck,
    StatusCheckResult,
)

ArgsT = TypeVar("ArgsT")

#: Added to the role's on_stop_timeout and the sites' graceful_timeout for the host's own clean-up.
STOP_MARGIN: Final = 5.0
LOG_FORMAT: Final = "%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s"


class RoleFailed(Exception):
    """The role failed: its process ends with a non-zero exit so the bootstrapper restarts it."""


def describe(error: BaseException) -> str:
    """An error as one line for a RoleHostState detail: its type and message."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def wait_first(*events: anyio.Event) -> None:
    """Wait until any of ``events`` is set."""
    async with anyio.create_task_group() as tasks:
        for event in events:

            async def wait(e: anyio.Event = event) -> None:
                await e.wait()
                tasks.cancel_scope.cancel()

            tasks.start_soon(wait)


class RoleHostBase(Actor):
    """The shared part of WorkerHost, IISHost, WebHost and WebWorker; subclasses add ``lifecycle``."""

    #: the process name of the host as Azure calls it, used for its logger
    host_name: ClassVar[str] = "RoleHost"

    def __init__(self, config: RoleHostConfig) -> None:
        """Build the host for ``config``; nothing runs until on_start."""
        self.config = config
        self.log = logging.getLogger(self.host_name)
        self.phase: RoleHostPhase = "starting"
        self.failed = False
        #: set once the bootstrapper asked this actor to stop
        self.stopping = False
        self._log_handler: logging.Handler | None = None

    # -- start-up ------------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Set up the process for the role, report "starting" and run the role in the background."""
        config = self.config
        self._open_log()
        self.log.info(
            "%s starting (pid %d): kind %s, app_root %s",
            self.host_name,
            os.getpid(),
            config.kind,
            config.app_root,
        )
        self._put_app_root_first()
        self._loop_thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()
        self.recycle_requested = anyio.Event()
        RoleEnvironment._attach(config.environment, self._request_recycle)
        self._allow_stop_time(config.on_stop_timeout + config.graceful_timeout + STOP_MARGIN)
        await self.report("starting")
        self.start_soon(self.lifecycle, name=f"{self.host_name} lifecycle")

    async def lifecycle(self) -> None:
        """Run the role until it ends; subclasses implement it."""
        raise NotImplementedError

    def _put_app_root_first(self) -> None:
        if not self.config.app_root:
            return
        root = os.path.abspath(self.config.app_root)
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)

    def _open_log(self) -> None:
        if not self.config.log_path or self._log_handler is not None:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.config.log_path)), exist_ok=True)
        handler = logging.FileHandler(self.config.log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        # On the root logger: the role's own logging lands in the host's log too, as in Azure.
        logging.getLogger().addHandler(handler)
        if logging.getLogger().level > logging.INFO:
            logging.getLogger().setLevel(logging.INFO)
        self._log_handler = handler

    def _allow_stop_time(self, seconds: float) -> None:
        """Let the actor runtime give our on_stop as long as the role's on_stop may take.

        The runtime bounds an actor's on_stop by its cell's stop_timeout (10 s); a role may
        take on_stop_timeout (300 s by default). The bootstrapper's stop ladder still bounds us.
        """
        cell = getattr(self, "_cell", None)
        if cell is not None and getattr(cell, "stop_timeout", seconds) < seconds:
            cell.stop_timeout = seconds

    # -- reports --------------------------------------------------------------------------------

    async def report(self, phase: RoleHostPhase, detail: str = "") -> None:
        """Log the phase and tell the parent (the bootstrapper) about it."""
        self.phase = phase
        if phase == "failed":
            self.log.error("%s: %s", phase, detail)
        else:
            self.log.info("%s%s", phase, f": {detail}" if detail else "")
        if self.parent is None:
            return
        with contextlib.suppress(ActorDead):  # the bootstrapper is gone; we die with it
            await self.parent.tell(RoleHostState(phase=phase, detail=detail, pid=os.getpid()))

    async def fail(self, detail: str) -> None:
        """Report "failed" and end the process with a non-zero exit (an actor crash).

        The stopping event and on_stop are not run afterwards, as in Azure.
        """
        if self.failed:
            return
        self.failed = True
        await self.report("failed", detail)
        self.start_soon(self._crash, RoleFailed(detail))

    async def _crash(self, error: RoleFailed) -> None:
        # Let the link's writer send the "failed" report ahead of the crash notice.
        await anyio.sleep(0.01)
        raise error

    # -- request_recycle ---------------------------------------------------------------------

    def _request_recycle(self) -> None:
        """RoleEnvironment.request_recycle(), from any thread."""
        if threading.get_ident() == self._loop_thread:
            self._on_recycle_requested()
            return
        with contextlib.suppress(anyio.RunFinishedError):  # the host is already gone
            anyio.from_thread.run_sync(self._on_recycle_requested, token=self._token)

    def _on_recycle_requested(self) -> None:
        if not self.recycle_requested.is_set():
            self.log.info("the role called request_recycle()")
        self.recycle_requested.set()

    # -- the bootstrapper's asks and tells ----------------------------------------------------

    async def receive(self, message: Any) -> Any:
        """Raise the RoleEnvironment event each bootstrapper message stands for."""
        match message:
            case StatusCheck():
                check = RoleInstanceStatusCheckEventArgs()
                await self.raise_event(RoleEnvironment.status_check, check)
                return StatusCheckResult(busy=check.busy or self.failed)
            case EnvironmentChanging(changes=changes):
                changing = RoleEnvironmentChangingEventArgs(changes)
                await self.raise_event(RoleEnvironment.changing, changing)
                self.log.info(
                    "changing %s: %s", _names(changes), "cancelled" if changing.cancel else "accepted"
                )
                return ChangingResult(cancel=changing.cancel)
            case EnvironmentChanged(environment=environment, changes=changes):
                RoleEnvironment._replace(environment)
                self.log.info("changed %s", _names(changes))
                await self.raise_event(RoleEnvironment.changed, RoleEnvironmentChangedEventArgs(changes))
            case SimultaneousChanging(changes=changes):
                await self.raise_event(
                    RoleEnvironment.simultaneous_changing, SimultaneousChangingEventArgs(changes)
                )
            case SimultaneousChanged(environment=environment, changes=changes):
                RoleEnvironment._replace(environment)
                self.log.info("simultaneous change %s", _names(changes))
                await self.raise_event(
                    RoleEnvironment.simultaneous_changed, SimultaneousChangedEventArgs(changes)
                )
            case _:
                return await super().receive(message)
        return None

    async def raise_event(self, event: Event[ArgsT], args: ArgsT) -> None:
        """Call the event's handlers; a handler that raises fails the role."""
        if self.failed:
            return
        try:
            await event.emit(args)
        except Exception as error:
            self.log.exception("a %s handler raised", event.name)
            await self.fail(f"a {event.name} handler raised {describe(error)}")


def _names(changes: Any) -> str:
    return ", ".join(f"{change.kind} {change.name}" for change in changes) or "(nothing)"
