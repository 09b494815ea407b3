"""A local actor's life: its mailbox, which outlives restarts, and each incarnation's run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ._actor import Actor
from ._errors import ActorDead, ActorError
from ._loopcalls import loop_calls
from ._mailbox import Asked, AwaitedReply, Mailbox, Reply, handler_failure
from ._reader import first_step
from ._ref import Ref
from ._stall import STALL_THRESHOLD, serving
from ._stall import step as stall_step

if TYPE_CHECKING:
    from ._link import LinkFaults, Outbox
    from ._reader import LinkReader
    from ._scope import Scope
    from ._system import ActorSystem

logger = logging.getLogger("actors")

_STOPPED: Any = object()  # what _next_entry returns when the actor is to stop

#: How long a stopping actor may take to finish its current message and run on_stop.
DEFAULT_STOP_TIMEOUT = 10.0
#: Messages an actor handles back to back before it lets other tasks run, if it has held the
#: event loop for FAIRNESS_SLICE by then (on trio, which times each task step; on asyncio,
#: after this many in any case).
FAIRNESS_STREAK = 64
#: Seconds: a run of queued messages shorter than this is not cut (a yield costs a scheduler
#: round, and its neighbours wait no longer than this for their turn).
FAIRNESS_SLICE = 0.001
#: Messages of one type in a row an actor takes between two reads of the clock (for the stall
#: detector, which names the type of message that held the loop).
CLOCK_EVERY = 32


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
        #: the type of the last message taken and when (perf_counter), and of the last one that
        #: held the loop over STALL_THRESHOLD before the next was taken: the stall detector names
        #: them (types, not messages: an idle actor must not keep its last message's bytes alive)
        self.handling: Any = None
        self.handling_at = 0.0
        self.slow: Any = None
        self.slow_at = 0.0
        self._idle = False
        #: the link to the parent, when this is the actor a child process serves (see _child),
        #: or a network link that delivers to it (see _net): it reads that link while idle
        self.link: Outbox | None = None
        self._reading: LinkReader | None = None  # the link this actor reads while idle
        self._loop_scope: anyio.CancelScope | None = None
        self._exited = anyio.Event()
        self._dead = anyio.Event()
        self._reason: BaseException | None = None
        # The deliver methods are the hot path of every tell: bind them once.
        self.deliver = self._mailbox.put_envelope
        self.deliver_nowait = self._mailbox.put_envelope_nowait
        #: Ref.tell_many and tell_many_nowait (see Mailbox.put_many)
        self.deliver_many = self._mailbox.put_many
        self.deliver_many_nowait = self._mailbox.put_many_or_refuse
        #: tells from a link's TELLS frame: as many as fit, at once (see Mailbox.put_many_nowait)
        self.deliver_some_nowait = self._mailbox.put_many_nowait
        self.wait_room = self._mailbox.wait_room
        self.timer = system.timer

    def on_arrival(self, hook: Callable[[Any], None] | None) -> None:
        """Call ``hook(message)`` as each message enters the mailbox (see Actor.on_arrival)."""
        self._mailbox.on_arrival = hook

    def mailbox_full(self) -> bool:
        """Whether the mailbox is full (senders wait for room)."""
        return self._mailbox.full()

    # -- Target protocol ---------------------------------------------------------------------

    async def wait_reply(self, reply: AwaitedReply) -> None:
        """Wait for the answer to an ask this actor was sent."""
        await reply.wait()

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
        elif self._reading is not None:
            self._reading.interrupt()

    async def join(self) -> BaseException | None:
        """Wait until the actor is gone for good."""
        await self._dead.wait()
        return self._reason

    # -- lifecycle, driven by the owner (a Scope or a Supervisor) ------------------------------

    @property
    def stop_budget(self) -> float:
        """The most stop() takes: stop_timeout for the message in hand, then as long for on_stop
        (its children stop first, each within its own budget)."""
        children: Scope | None = getattr(self, "children", None)  # set once the actor runs
        return 2 * self.stop_timeout + (children.stop_budget if children is not None else 0.0)

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
        failures: list[BaseException] = []
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
            failures.extend(group.exceptions)
        finally:
            self._exited.set()
        errors = [crash, *failures] if crash is not None else failures
        if errors:
            log_crash(self.name, errors)
        if start_error is not None:
            raise ActorError.from_exception(start_error) from start_error
        return errors[0] if errors else None  # the reason a supervisor or join() sees

    async def _serve_then_stop(self, actor: Actor) -> BaseException | None:
        try:
            await self._serve(actor)
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside: still give the actor its on_stop, bounded and shielded.
            with anyio.move_on_after(self.stop_timeout, shield=True):
                await self._finish(actor)
            raise
        except Exception as exc:
            return exc
        try:
            with anyio.fail_after(self.stop_timeout, shield=True):
                await self._finish(actor)
        except Exception as exc:
            return exc
        return None

    async def _finish(self, actor: Actor) -> None:
        await self.children.aclose()
        await actor.on_stop()

    async def _serve(self, actor: Actor) -> None:
        receive = actor.receive
        mailbox = self._mailbox
        queued = mailbox.items  # (tested here as a deque: no method call per message)
        take_nowait = mailbox.take_nowait
        popleft = queued.popleft
        me = loop_calls().current_task()
        current: Reply | None = None
        streak = unclocked = 0
        serving(me, self)
        try:
            with anyio.CancelScope() as scope:
                self._loop_scope = scope
                while not self.stop_requested:
                    # Take what is already queued without a scheduler round trip, but yield
                    # every FAIRNESS_STREAK messages so a busy actor cannot starve its neighbours.
                    if not queued:
                        entry = await self._next_entry()
                        if entry is _STOPPED:
                            break
                        streak = 0
                        unclocked = CLOCK_EVERY  # a new step: read the clock
                    else:
                        entry = take_nowait()
                        streak += 1
                        # (handling_at: when a recent message began; no clock read more)
                        if streak >= FAIRNESS_STREAK:
                            streak = 0
                            if self.handling_at - stall_step.started > FAIRNESS_SLICE:
                                self._give_back_link(me)
                                await anyio.lowlevel.checkpoint()
                    if entry.__class__ is Asked:
                        message, current = entry.message, entry.reply
                    else:
                        message = entry
                    entry = None
                    link = self.link
                    reader = link.reader if link is not None else None
                    self.current_reply = current
                    # The clock (a fifth of a microsecond here) is read when the type changes
                    # and every CLOCK_EVERY messages: those between are of the type it names.
                    kind = type(message)
                    unclocked += 1
                    if kind is not self.handling or unclocked >= CLOCK_EVERY:
                        unclocked = 0
                        self._clock(kind)
                    try:
                        if reader is not None and reader.holder is me and not queued:
                            # Holding the link: a handler that answers at once keeps it.
                            done, outcome = first_step(receive(message), reader, me)
                            value: Any = outcome if done else await outcome
                        else:
                            if reader is not None and reader.holder is me:
                                # More to handle: the link's reader task reads meanwhile (a
                                # first step costs a StopIteration per message).
                                reader.give_back()
                            value = await receive(message)
                    except Exception as exc:
                        if current is None:
                            raise  # a tell's handler raised: the actor crashed
                        if self.current_reply is not None:
                            current.reject(handler_failure(exc))
                        else:  # the answer was deferred: its owner answers; the error is ours
                            logger.error(
                                "actor %r raised after deferring its reply: %r", self.name, exc, exc_info=exc
                            )
                    else:
                        if current is not None and self.current_reply is not None:
                            current.resolve(value)  # (None: the handler deferred its answer)
                    self.current_reply = current = None
                    # Nothing of the handled message stays alive while the actor waits.
                    message = value = None
                    if not queued or queued[0].__class__ is Asked or self.stop_requested:
                        continue
                    # A run of tells is queued: each is handled as above, with only the steps a
                    # tell needs (no reply; the link was given back already, for the run).
                    handling = self.handling
                    while True:
                        message = popleft()
                        if mailbox.room is not None and len(queued) <= mailbox.room_at:
                            mailbox.wake_senders()
                        streak += 1
                        if streak >= FAIRNESS_STREAK:
                            streak = 0
                            if self.handling_at - stall_step.started > FAIRNESS_SLICE:
                                self._give_back_link(me)
                                await anyio.lowlevel.checkpoint()
                        kind = type(message)
                        unclocked += 1
                        if kind is not handling or unclocked >= CLOCK_EVERY:
                            unclocked = 0
                            self._clock(kind)
                            handling = kind
                        await receive(message)  # (raising: the actor crashed)
                        message = None
                        if not queued or queued[0].__class__ is Asked or self.stop_requested:
                            break
        finally:
            serving(me, None)
            self._idle = False
            self._loop_scope = None
            self._give_back_link(me)
            if current is not None:
                current.reject(ActorDead(f"actor {self.name!r} stopped while handling the message"))

    def _clock(self, kind: type) -> None:
        """A message of type ``kind`` begins now (for the stall detector, see CLOCK_EVERY)."""
        now = perf_counter()
        last = self.handling_at
        if now - last > STALL_THRESHOLD and last >= stall_step.started:
            # The messages since began in this very step and held it that long.
            self.slow, self.slow_at = self.handling, now
        self.handling, self.handling_at = kind, now

    async def _next_entry(self) -> Any:
        """Idle: wait for the next entry of the mailbox; _STOPPED when asked to stop meanwhile."""
        mailbox = self._mailbox
        reader = self.link.reader if self.link is not None else None
        if reader is not None and reader.borrow():
            # The actor its process serves (or one a network link delivers to): it reads its
            # link itself while idle, so the next message needs no hand-over from the link's
            # reader task (one scheduler pass less). A read that would have to wait for room in
            # another actor's mailbox hands the reading back (see LinkReader._wait_for).
            self._reading = reader
            mailbox.on_put = reader.interrupt  # a message from this process wakes us too
            try:
                while not mailbox and not self.stop_requested and not reader.ended and reader.holds():
                    await reader.read_once(mailbox.full)
            finally:
                self._reading = None
                mailbox.on_put = None
            if mailbox and not self.stop_requested:
                return mailbox.take_nowait()  # keep the link while handling it (see _serve)
            reader.give_back()
            if self.stop_requested:
                return _STOPPED
        self._idle = True
        try:
            return await mailbox.take()
        finally:
            self._idle = False

    def _give_back_link(self, me: Any) -> None:
        reader = self.link.reader if self.link is not None else None
        if reader is not None and reader.holder is me:
            reader.give_back()


def log_crash(name: str, errors: list[BaseException]) -> None:
    """Log why an actor crashed: every error with its traceback, not only the first."""
    if len(errors) == 1:
        logger.error("actor %r crashed: %r", name, errors[0], exc_info=errors[0])
        return
    summary = "; ".join(repr(error) for error in errors)
    group = BaseExceptionGroup(f"actor {name!r} crashed with {len(errors)} errors", errors)
    logger.error("actor %r crashed with %d errors: %s", name, len(errors), summary, exc_info=group)
