"""A local actor's life: its mailbox, which outlives restarts, and each incarnation's run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ._actor import Actor
from ._errors import ActorDead, ActorError
from ._mailbox import Mailbox, Reply, handler_failure
from ._ref import Ref

if TYPE_CHECKING:
    from ._link import LinkFaults
    from ._scope import Scope
    from ._system import ActorSystem

logger = logging.getLogger("actors")

#: How long a stopping actor may take to finish its current message and run on_stop.
DEFAULT_STOP_TIMEOUT = 10.0
#: Messages an actor handles back to back before it lets other tasks run.
FAIRNESS_STREAK = 64


class LocalCell:
    """Runs an in-process actor: one mailbox, one incarnation at a time."""

    def __init__(
        self,
        system: ActorSystem,
        name: str,
        factory: Callable[[], Actor],
        *,
        mailbox_size: int,
        parent: Ref | None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.system = system
        self.name = name
        self.parent = parent
        self.stop_timeout = stop_timeout
        self._factory = factory
        self._mailbox = Mailbox(name, mailbox_size)
        self.ref = Ref(self)
        self.children: Scope
        self.stop_requested = False
        self.stopped_by_owner = False
        #: the reply slot of the ask being handled; Actor.defer_reply() takes it
        self.current_reply: Reply | None = None
        self._idle = False
        self._loop_scope: anyio.CancelScope | None = None
        self._exited = anyio.Event()
        self._dead = anyio.Event()
        self._reason: BaseException | None = None
        # The deliver methods are the hot path of every tell: bind them once.
        self.deliver = self._mailbox.put_envelope
        self.deliver_nowait = self._mailbox.put_envelope_nowait

    # -- Target protocol ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """This process's pid: a local actor runs here."""
        import os

        return None if self._dead.is_set() else os.getpid()

    @property
    def faults(self) -> LinkFaults | None:
        """Local actors have no link, hence no fault hook."""
        return None

    def request_stop(self, *, by_owner: bool = True) -> None:
        """Stop after the current message (at once when idle); the owner will not restart it."""
        self.stop_requested = True
        self.stopped_by_owner = self.stopped_by_owner or by_owner
        if self._idle and self._loop_scope is not None:
            self._loop_scope.cancel()

    async def join(self) -> BaseException | None:
        """Wait until the actor is gone for good."""
        await self._dead.wait()
        return self._reason

    # -- lifecycle, driven by the owner (a Scope or a Supervisor) ------------------------------

    async def stop(self) -> None:
        """Stop the running incarnation: let it finish its message within stop_timeout, then cut."""
        self.request_stop()
        with anyio.move_on_after(self.stop_timeout):
            await self._exited.wait()
        if not self._exited.is_set():
            logger.warning("actor %r did not stop within %.1f s; cancelling it", self.name, self.stop_timeout)
            if self._loop_scope is not None:
                self._loop_scope.cancel()
            await self._exited.wait()

    def close(self, reason: BaseException | None) -> None:
        """The actor will not run again: refuse messages, fail waiting asks, wake joiners."""
        if self._dead.is_set():
            return
        self._reason = reason
        self._mailbox.close()
        self._dead.set()

    async def run(self, *, task_status: TaskStatus[Ref] = anyio.TASK_STATUS_IGNORED) -> BaseException | None:
        """Run one incarnation: build the actor, on_start, serve messages until stopped.

        Returns None when stopped normally and the exception when the actor crashed.
        Raises ActorError (before ``task_status.started``) when on_start fails.
        """
        from ._scope import Scope

        self._exited = anyio.Event()
        crash: BaseException | None = None
        start_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as task_group:
                actor = self._factory()
                actor._cell = self
                actor._task_group = task_group
                self.children = Scope(self.system, task_group)
                try:
                    await actor.on_start()
                except Exception as exc:
                    start_error = exc
                else:
                    task_status.started(self.ref)
                    crash = await self._serve_then_stop(actor)
                task_group.cancel_scope.cancel()
        except* Exception as group:
            # A background task of the actor failed: that is a crash of the actor.
            crash = crash or group.exceptions[0]
        finally:
            self._exited.set()
        if start_error is not None:
            raise ActorError.from_exception(start_error) from start_error
        if crash is not None:
            logger.error("actor %r crashed: %r", self.name, crash, exc_info=crash)
        return crash

    async def _serve_then_stop(self, actor: Actor) -> BaseException | None:
        try:
            await self._serve(actor)
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside: still give the actor its on_stop, bounded and shielded.
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.stop_timeout):
                await self._finish(actor)
            raise
        except Exception as exc:
            return exc
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(self.stop_timeout):
                    await self._finish(actor)
            except Exception as exc:
                return exc
        return None

    async def _finish(self, actor: Actor) -> None:
        await self.children.aclose()
        await actor.on_stop()

    async def _serve(self, actor: Actor) -> None:
        receive = actor.receive
        get, get_nowait = self._mailbox.get, self._mailbox.get_nowait
        current: Reply | None = None
        streak = 0
        try:
            with anyio.CancelScope() as scope:
                self._loop_scope = scope
                while not self.stop_requested:
                    # Take what is already queued without a scheduler round trip, but yield
                    # every FAIRNESS_STREAK messages so a busy actor cannot starve its neighbours.
                    try:
                        message, current = get_nowait()
                    except anyio.WouldBlock:
                        self._idle = True
                        message, current = await get()
                        self._idle = False
                        streak = 0
                    else:
                        streak += 1
                        if streak >= FAIRNESS_STREAK:
                            streak = 0
                            await anyio.lowlevel.checkpoint()
                    if current is None:
                        await receive(message)
                        continue
                    self.current_reply = current
                    try:
                        value: Any = await receive(message)
                    except Exception as exc:
                        if self.current_reply is not None:
                            current.reject(handler_failure(exc))
                        else:  # the answer was deferred: its owner answers; the error is ours
                            logger.error(
                                "actor %r raised after deferring its reply: %r", self.name, exc, exc_info=exc
                            )
                    else:
                        if self.current_reply is not None:  # None: the handler deferred its answer
                            current.resolve(value)
                    self.current_reply = current = None
        finally:
            self._idle = False
            self._loop_scope = None
            if current is not None:
                current.reject(ActorDead(f"actor {self.name!r} stopped while handling the message"))
