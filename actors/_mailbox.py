"""Mailboxes and reply slots: how a message and the promise of its answer travel together."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import sniffio

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

    __slots__ = ("_error", "_event", "_value", "on_abandon")

    def __init__(self) -> None:
        self._event = new_event()
        self._value: Any = None
        self._error: BaseException | None = None
        self.on_abandon: Callable[[], None] | None = None

    def resolve(self, value: Any) -> None:
        """Deliver the value unless an answer already arrived."""
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def reject(self, error: BaseException) -> None:
        """Deliver the failure unless an answer already arrived. Any exception but ActorDead
        or an ActorError reaches the asker as an ActorError, as a handler's would."""
        if not self._event.is_set():
            self._error = (
                error if isinstance(error, (ActorError, ActorDead, AskTimeout)) else handler_failure(error)
            )
            self._event.set()

    async def wait(self) -> None:
        """Wait until the answer arrives."""
        await self._event.wait()

    def result(self) -> Any:
        """The answer: the value, or raise the failure."""
        if self._error is not None:
            raise self._error
        return self._value

    def abandon(self) -> None:
        """The asker gave up (timeout or cancellation); a late answer is dropped."""
        self._event.set()
        if self.on_abandon is not None:
            self.on_abandon()


Envelope = tuple[Any, Reply | None]


class Mailbox:
    """A bounded FIFO of (message, reply) envelopes; the reply is None for a tell.

    Hand-rolled rather than a memory object stream: an actor takes what is already queued
    without a scheduler round trip, and a sender only yields when the mailbox is full. Only
    one task (the actor's loop) ever takes from it.
    """

    __slots__ = ("_getter", "_items", "_room", "closed", "name", "size")

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"mailbox_size must be at least 1, not {size}")
        self.name = name
        self.size = size
        self.closed = False
        self._items: deque[Envelope] = deque()
        self._getter: anyio.Event | None = None
        self._room: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    async def put_envelope(self, message: Any, reply: Reply | None) -> None:
        """Add a message, waiting while the mailbox is full. Raises ActorDead once closed."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        while len(self._items) >= self.size and not self.closed:
            if self._room is None:
                self._room = new_event()
            await self._room.wait()
        self.put_envelope_nowait(message, reply)

    def put_envelope_nowait(self, message: Any, reply: Reply | None) -> None:
        """Add a message or raise MailboxFull / ActorDead at once."""
        if self.closed:
            raise ActorDead(f"actor {self.name!r} is dead")
        if len(self._items) >= self.size:
            raise MailboxFull(
                f"mailbox of actor {self.name!r} is full ({self.size} messages); "
                "use tell() to wait for room, or raise mailbox_size"
            )
        self._items.append((message, reply))
        if self._getter is not None:
            self._getter.set()
            self._getter = None

    async def get(self) -> Envelope:
        """Take the oldest envelope, waiting for one."""
        while not self._items:
            self._getter = new_event()
            await self._getter.wait()
        return self.get_nowait()

    def get_nowait(self) -> Envelope:
        """Take the oldest envelope now; raises anyio.WouldBlock when there is none."""
        try:
            envelope = self._items.popleft()
        except IndexError:
            raise anyio.WouldBlock from None
        if self._room is not None:
            self._room.set()
            self._room = None
        return envelope

    def close(self) -> None:
        """Refuse new envelopes and fail every waiting ask with ActorDead."""
        self.closed = True
        while self._items:
            _, reply = self._items.popleft()
            if reply is not None:
                reply.reject(ActorDead(f"actor {self.name!r} stopped before answering"))
        if self._room is not None:
            self._room.set()


_event_classes: dict[str, type[anyio.Event]] = {}


def new_event() -> anyio.Event:
    """anyio.Event(), minus the backend lookup it pays on every call (a few microseconds)."""
    library = sniffio.current_async_library()
    try:
        return _event_classes[library]()
    except KeyError:
        event = anyio.Event()
        _event_classes[library] = type(event)
        return event


def handler_failure(exc: BaseException) -> ActorError:
    """The ActorError an asker receives when the handler raised ``exc``."""
    error = ActorError.from_exception(exc)
    error.__cause__ = exc
    return error
