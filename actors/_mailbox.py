"""Mailboxes and reply slots: how a message and the promise of its answer travel together."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from ._backend import Backend, current_backend
from ._errors import ActorDead, ActorError, AskTimeout, MailboxFull


class Reply:
    """Where the answer to one ask goes. Subclasses forward it elsewhere (e.g. over a link)."""

    __slots__ = ()

    def resolve(self, value: Any) -> None:
        """Deliver the handler's return value."""
        raise NotImplementedError

    def reject(self, error: BaseException) -> None:
        """Deliver a failure: an ActorError from the handler, or ActorDead."""
        raise NotImplementedError


class AwaitedReply(Reply):
    """A reply some local task is waiting for in ask()."""

    __slots__ = ("_error", "_event", "_value", "on_abandon", "on_settle", "settled")

    def __init__(self) -> None:
        self.settled = False
        self._event: Signal | None = None  # made only if the asker has to wait for it
        self._value: Any = None
        self._error: BaseException | None = None
        #: called when the asker gives up (e.g. to forget the ask on a link)
        self.on_abandon: Callable[[], None] | None = None
        #: called when the answer arrives (e.g. to wake an asker reading a link for it)
        self.on_settle: Callable[[], None] | None = None

    def resolve(self, value: Any) -> None:
        """Deliver the value unless an answer already arrived."""
        if not self.settled:
            self._value = value
            self._settle()

    def reject(self, error: BaseException) -> None:
        """Deliver the failure unless an answer already arrived. Any exception but ActorDead,
        AskTimeout or an ActorError reaches the asker as an ActorError, as a handler's would."""
        if not self.settled:
            self._error = (
                error if isinstance(error, (ActorError, ActorDead, AskTimeout)) else handler_failure(error)
            )
            self._settle()

    def _settle(self) -> None:
        self.settled = True
        if self._event is not None:
            self._event.set()
        if self.on_settle is not None:
            self.on_settle()

    async def wait(self) -> None:
        """Wait until the answer arrives (a checkpoint even when it already has)."""
        if self.settled:
            await anyio.lowlevel.checkpoint()
            return
        self._event = new_event()
        await self._event.wait()

    def result(self) -> Any:
        """The answer: the value, or raise the failure (once: the reply lets go of it)."""
        if self._error is not None:
            # Not kept here nor in this frame: its traceback holds the asker's frame, which
            # holds this reply, a cycle only the garbage collector would free (with whatever
            # the asker's frames hold, a request's megabytes say).
            error, self._error = self._error, None
            try:
                raise error
            finally:
                del error
        return self._value

    def expire(self, error: AskTimeout) -> None:
        """The ask timed out: fail it with ``error`` and forget it wherever it waits."""
        if not self.settled:
            self._error = error
            self._settle()
            if self.on_abandon is not None:
                self.on_abandon()

    def abandon(self) -> None:
        """The asker gave up (timeout or cancellation); a late answer is dropped."""
        if not self.settled:
            self.settled = True
            if self.on_abandon is not None:
                self.on_abandon()


class Asked:
    """An ask in a mailbox: the message and where its answer goes. A tell is its message
    alone: a run of tells enters the mailbox without an object of ours each."""

    __slots__ = ("message", "reply")

    def __init__(self, message: Any, reply: Reply) -> None:
        self.message = message
        self.reply = reply


class Mailbox:
    """A bounded FIFO of entries: a tell's message, or an Asked for an ask.

    Hand-rolled rather than a memory object stream: an actor takes what is already queued
    without a scheduler round trip, and a sender only yields when the mailbox is full. Only
    one task (the actor's loop) ever takes from it.
    """

    __slots__ = ("_items", "closed", "items", "name", "on_arrival", "on_put", "room", "room_at", "size")

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"mailbox_size must be at least 1, not {size}")
        self.name = name
        self.size = size
        self.closed = False
        self._items: deque[Any] = deque()
        #: the entries, oldest first, to look at (only put and take change it)
        self.items = self._items
        #: called once when the next entry arrives: wakes the actor waiting for it
        self.on_put: Callable[[], None] | None = None
        #: called with each message as it arrives, before it waits for room or its turn
        self.on_arrival: Callable[[Any], None] | None = None
        #: set (by whoever takes) once no more than ``room_at`` entries are left: senders wait on it
        self.room: Signal | None = None
        self.room_at = 0

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        """Whether a put would have to wait for room."""
        return len(self._items) >= self.size

    async def put_envelope(self, message: Any, reply: Reply | None) -> None:
        """Add a message, waiting while the mailbox is full. Raises ActorDead once closed."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if len(self._items) >= self.size and not self.closed:
            if self.on_arrival is not None:
                self.on_arrival(message)  # it arrived now, though it waits for room
            while len(self._items) >= self.size and not self.closed:
                await self._wait_room(self.size - 1)
            self._append(message if reply is None else Asked(message, reply))
            return
        self.put_envelope_nowait(message, reply)

    def put_many_nowait(self, messages: list[Any], start: int) -> int:
        """Add the tells ``messages[start:]``, as many as there is room for, in order; return
        how many. Raises ActorDead once closed."""
        if self.closed:
            raise ActorDead(f"actor {self.name!r} is dead")
        items = self._items
        end = min(len(messages), start + self.size - len(items))
        if end <= start:
            return 0
        if self.on_arrival is not None:
            for message in messages[start:end]:
                self.on_arrival(message)
        items.extend(messages[start:end] if start or end < len(messages) else messages)
        if self.on_put is not None:
            on_put, self.on_put = self.on_put, None
            on_put()
        return end - start

    async def put_many(self, messages: Iterable[Any]) -> None:
        """Add tells in order, waiting for room as the same put_envelope calls would: as many as
        fit at once; while the mailbox is full, the next one waits (once it arrived) until the
        mailbox is half empty, then as many again. Raises ActorDead once closed."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        batch = messages if isinstance(messages, list) else list(messages)
        start = self.put_many_nowait(batch, 0)
        while start < len(batch):
            if self.on_arrival is not None:
                self.on_arrival(batch[start])  # it arrived now, though it waits for room
            while len(self._items) >= self.size and not self.closed:
                await self._wait_room(self.size // 2)
            self._append(batch[start])
            start += 1
            start += self.put_many_nowait(batch, start)

    def put_many_or_refuse(self, messages: Iterable[Any]) -> None:
        """Add tells in order, as many as there is room for now; raise MailboxFull (its ``sent``:
        how many were added) when that is not all of them, ActorDead once closed."""
        batch = messages if isinstance(messages, list) else list(messages)
        taken = self.put_many_nowait(batch, 0)
        if taken < len(batch):
            raise MailboxFull(
                f"mailbox of actor {self.name!r} is full ({self.size} messages): {taken} of "
                f"{len(batch)} messages were queued; use tell_many() to wait for room",
                sent=taken,
            )

    async def wait_room(self) -> None:
        """Wait until the mailbox is at most half full (or closed): room for many at once."""
        while len(self._items) > self.size // 2 and not self.closed:
            await self._wait_room(self.size // 2)

    async def _wait_room(self, at: int) -> None:
        """Wait until no more than ``at`` entries are left (or more room, or closed)."""
        if self.room is None:
            self.room, self.room_at = new_event(), at
        else:
            self.room_at = max(self.room_at, at)
        await self.room.wait()

    def put_envelope_nowait(self, message: Any, reply: Reply | None) -> None:
        """Add a message or raise MailboxFull / ActorDead at once."""
        if self.closed:
            raise ActorDead(f"actor {self.name!r} is dead")
        if len(self._items) >= self.size:
            raise MailboxFull(
                f"mailbox of actor {self.name!r} is full ({self.size} messages); "
                "use tell() to wait for room, or raise mailbox_size"
            )
        if self.on_arrival is not None:
            self.on_arrival(message)
        self._append(message if reply is None else Asked(message, reply))

    def _append(self, entry: Any) -> None:
        if self.closed:
            raise ActorDead(f"actor {self.name!r} is dead")
        self._items.append(entry)
        if self.on_put is not None:
            on_put, self.on_put = self.on_put, None
            on_put()

    async def take(self) -> Any:
        """Take the oldest entry (a tell's message, or an Asked), waiting for one."""
        while not self._items:
            getter = new_event()
            self.on_put = getter.set
            await getter.wait()
        return self.take_nowait()

    def take_nowait(self) -> Any:
        """Take the oldest entry now; raises anyio.WouldBlock when there is none."""
        try:
            entry = self._items.popleft()
        except IndexError:
            raise anyio.WouldBlock from None
        if self.room is not None and len(self._items) <= self.room_at:
            self.wake_senders()
        return entry

    def wake_senders(self) -> None:
        """Wake the senders waiting for room (the taker found ``room_at`` entries or fewer)."""
        if self.room is not None:
            self.room.set()
            self.room = None

    def close(self) -> None:
        """Refuse new entries and fail every waiting ask with ActorDead."""
        self.closed = True
        while self._items:
            entry = self._items.popleft()
            if entry.__class__ is Asked:
                entry.reply.reject(ActorDead(f"actor {self.name!r} stopped before answering"))
        if self.room is not None:
            self.room.set()


class Signal(Protocol):
    """A one-shot event: the part of anyio.Event's interface that trio.Event shares."""

    def set(self) -> None:
        """Wake every waiter, now and later."""

    def is_set(self) -> bool:
        """Whether set() was called."""

    async def wait(self) -> None:
        """Wait until set() is called."""


_event_classes: dict[Backend, Callable[[], Signal]] = {}


def new_event() -> Signal:
    """A one-shot event of the running backend's own kind: trio.Event on trio (a fifth of
    anyio.Event's cost there, which looks the backend up and wraps trio.Event), else anyio's."""
    backend = current_backend()
    try:
        return _event_classes[backend]()
    except KeyError:
        if backend == "trio":
            import trio

            _event_classes[backend] = trio.Event
        else:
            _event_classes[backend] = anyio.Event
        return _event_classes[backend]()


def handler_failure(exc: BaseException) -> ActorError:
    """The ActorError an asker receives when the handler raised ``exc``."""
    error = ActorError.from_exception(exc)
    error.__cause__ = exc
    return error
