"""The reading end of a link, and which task reads it.

One task reads a link at a time. By default that is the link's reader task, but a task about to
wait for a frame from the peer (an asker for its reply, an idle actor for its next message)
*borrows* the reading and reads for itself: the frame then wakes the task that wants it, one
scheduler pass, instead of waking the reader task which wakes the task that wants it, two.
On an ask round trip that halves the passes on both sides.

The rule that keeps this safe: a borrower suspends only while it waits for the socket (or at a
bare checkpoint inside its read loop); before it waits for anything else, or returns, it gives
the reading back. So whenever other tasks run, someone is reading or about to.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, cast

import anyio
import anyio.lowlevel
import msgspec

from ._loopcalls import loop_calls
from ._mailbox import Signal, new_event
from ._wire import (
    MAX_FRAME_SIZE,
    TELLS_TAG,
    BadFrame,
    Batch,
    Frame,
    FrameSplitter,
    Kind,
    decode_batch,
    decode_envelope,
    split_values,
)

if TYPE_CHECKING:
    from ._link import LinkFaults

READ_SIZE: Final = 256 * 1024
#: A reader yields after this many reads that did not have to wait: a peer that never lets it
#: block must not starve the other tasks.
FAIRNESS_READS: Final = 16
#: While a message waits for room in a full mailbox, the messages read after it for the same
#: actor queue behind it (in order) and the link is read on, so that answers, pings and the
#: messages to other actors behind them are not stuck: the actor whose mailbox is full may be
#: waiting for one of them (an answer, or an answer that needs one of those actors). Past this
#: many bytes queued the link is no longer read until the queues drain (back pressure).
MAX_QUEUED_BYTES: Final = 16 * 1024 * 1024
#: Frames handled at once even while messages queue: none of them goes to a mailbox, and the
#: order of an answer among the messages that reach other mailboxes does not matter.
_UNQUEUED: Final = frozenset({int(Kind.REPLY), int(Kind.FAIL), int(Kind.PING), int(Kind.PONG)})

T = TypeVar("T")

#: Handles one frame; returns an awaitable only when handling it must wait (e.g. for room in a
#: full mailbox), so the common case costs no coroutine.
Dispatch = Callable[[Frame], Awaitable[None] | None]
#: Handles a TELLS frame's tells at once (see actors._wire.Batch), as Dispatch a frame.
DispatchTells = Callable[[Batch], Awaitable[None] | None]


class LinkSocket(Protocol):
    """What a link runs over: a connected non-blocking socket, or anything with its interface
    (recv and send raise BlockingIOError when they would block; fileno is what to wait on),
    such as a TLS session over one (actors._tls.TLSChannel)."""

    def recv(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; b"" at the end of the stream."""

    def send(self, data: bytes | bytearray | memoryview, /) -> int:
        """Send a prefix of ``data``; return its length (the caller sends the rest next)."""

    def fileno(self) -> int:
        """The descriptor whose readiness the link waits for."""

    def setblocking(self, flag: bool, /) -> None:
        """Set blocking mode (a link always runs non-blocking)."""


class LinkReader:
    """Reads frames off a link's socket and hands each to ``dispatch``, in order."""

    def __init__(
        self,
        sock: LinkSocket,
        dispatch: Dispatch,
        on_bad_frame: Callable[[BadFrame, Frame | None], None],
        faults: LinkFaults,
        start_soon: Callable[..., object],
        max_frame_size: int = MAX_FRAME_SIZE,
        on_tells: DispatchTells | None = None,
    ) -> None:
        self._sock = sock
        # Readers wait on a descriptor of their own, so that waking one (notify_closing) cannot
        # disturb the writer task waiting on the socket's own descriptor.
        self._fd = os.dup(sock.fileno())
        self._dispatch = dispatch
        self._on_bad_frame = on_bad_frame
        self._on_tells = on_tells
        self._faults = faults
        self._start_soon = start_soon
        self._calls = loop_calls()
        self._splitter = FrameSplitter(max_frame_size)
        self._frames: Iterator[bytes] = iter(())  # frames read but not dispatched yet
        self._more = False  # whether _frames may have any left
        self._reads = 0
        self._task: Any = None  # the link's reader task
        self._handback: Signal | None = None  # the reader task waits on it while lent
        #: the waits borrowers left to the reader task, oldest first (a second borrower may stall
        #: before the reader task took the first: neither may be lost)
        self._stalled: deque[Awaitable[None]] = deque()
        #: by the actor they go to (a network link's name; "" on a process link): messages
        #: waiting for room (a delivery, or a frame read behind one), oldest first, with their
        #: sizes; a task per actor delivers them while the link is read on
        self._queues: dict[str, deque[tuple[Frame | Batch | Awaitable[None], int]]] = {}
        self._queued = 0  # their bytes
        self._room: Signal | None = None  # set when the queue gets below MAX_QUEUED_BYTES
        #: the task reading now (None: nobody yet; the reader task takes it when it runs)
        self.holder: Any = None
        #: the task waiting for the socket to become readable, if one is
        self.parked: Any = None
        #: the peer closed the link, or it broke
        self.ended = False

    # -- the link's own reader task ----------------------------------------------------------

    async def run(self) -> None:
        """Read whenever no borrower does, until the link ends."""
        me = self._task = self._calls.current_task()
        try:
            while not self.ended:
                if self.holder is None:
                    self.holder = me
                if self.holder is me:
                    if self._stalled:  # a dispatch a borrower had to leave to us
                        await self._dispatch_waiting(self._stalled.popleft(), None)
                    else:
                        await self.read_once()
                else:
                    self._handback = handback = new_event()
                    await handback.wait()
            while self._queues:  # what the peer sent before it closed is delivered still
                if self._room is None:
                    self._room = new_event()
                await self._room.wait()
        finally:
            if self.holder is me:
                self.holder = None

    # -- borrowing ---------------------------------------------------------------------------

    def holds(self) -> bool:
        """Whether the current task holds the reading."""
        return self.holder is not None and self.holder is self._calls.current_task()

    def borrow(self) -> bool:
        """Take the reading for the current task; False when another task is busy reading
        (it will dispatch what the current task waits for) or the link has ended."""
        if self.ended:
            return False
        me = self._calls.current_task()
        holder = self.holder
        if holder is me:
            return True
        if holder is None:
            self.holder = me
            return True
        if holder is self._task and self.parked is holder:
            self.holder = me
            self._calls.notify_closing(self._fd)  # the reader task steps aside
            return True
        return False

    def give_back(self) -> None:
        """End a borrow (if the current task holds the reading): the link's reader task reads
        again."""
        if self.holder is not self._calls.current_task():
            return  # not ours (any more: see _wait_for)
        self.holder = None
        handback, self._handback = self._handback, None
        if handback is not None:
            handback.set()

    def interrupt(self) -> None:
        """Wake the holder if it waits for the socket, so it looks again at why it reads."""
        if self.parked is not None:
            self._calls.notify_closing(self._fd)

    # -- reading -----------------------------------------------------------------------------

    async def read_once(self, enough: Callable[[], object] | None = None) -> bool:
        """Holder only: dispatch what the socket has, waiting for it to have something first.

        ``enough`` stops the dispatching early, as soon as it returns true; the frames left
        are dispatched first by the next read (an actor reading for its own mailbox must not
        fill it past its size: it would wait for room only itself can make).
        Returns whether it let other tasks run (waited, or yielded for fairness).
        """
        if self.ended:
            return False
        if self._queued > MAX_QUEUED_BYTES:  # back pressure: no more reading until they drain
            return await self._wait_for(self._until_room(), enough)
        if self._more:  # left by a dispatch that stopped early or was cancelled
            pending = self._dispatch_backlog(enough)
            if pending is not None:
                return await self._wait_for(pending, enough)
            return False
        yielded = False
        try:
            chunk = self._sock.recv(READ_SIZE)
        except BlockingIOError:
            self.parked = me = self._calls.current_task()
            try:
                await self._calls.wait_readable(self._fd)
            except self._calls.closed_error:
                return True  # woken on purpose: the caller looks again at why it reads
            finally:
                if self.parked is me:  # (a task moved aside by borrow() must not clear it)
                    self.parked = None
            if self.holder is not me:
                # Woken by the data, not by borrow(), which came before this task ran (it still
                # looked parked): the borrower may have read a chunk and left part of it as the
                # backlog; a read here would put the next chunk over it (lost) and dispatch
                # that out of turn. The caller looks again at why it reads.
                return True
            self._reads = 0
            yielded = True
            try:
                chunk = self._sock.recv(READ_SIZE)  # readable now, most likely
            except BlockingIOError:
                return True
            except OSError:
                self._end()
                return True
        except OSError:
            self._end()
            return False
        if not chunk:
            self._end()
            return yielded
        # The chunk's frames are the link's backlog before any yield: a holder that gives the
        # reading back (a handler that waited) or is cancelled meanwhile leaves them to the next
        # holder, which dispatches them first (before: dispatched out of turn, or lost).
        self._frames = self._splitter.split(chunk)
        self._more = True
        self._reads += 1
        if self._reads >= FAIRNESS_READS:
            self._reads = 0
            await anyio.lowlevel.checkpoint()
            if self.holder is not self._calls.current_task():
                return True
            yielded = True
        pending = self._dispatch_backlog(enough)
        if pending is not None:
            return await self._wait_for(pending, enough) or yielded
        return yielded

    async def _wait_for(self, pending: Awaitable[None], enough: Callable[[], object] | None) -> bool:
        """Reading must wait (too many messages queued for room in mailboxes): the reader task
        waits; a borrower leaves the wait to the reader task and gives the reading back (it must
        not wait, holding the link, on an actor that may be waiting for it). Returns whether
        other tasks ran."""
        if self.holder is self._task:
            await self._dispatch_waiting(pending, enough)
            return True
        self._stalled.append(pending)  # dispatched, with the frames after it, by the reader task
        self.give_back()
        return False

    def _dispatch_backlog(self, enough: Callable[[], object] | None) -> Awaitable[None] | None:
        """Dispatch the frames read, in order, until one must wait: return what it waits for
        (then call again), or None when done. No coroutine in the common case."""
        if enough is not None and enough():
            return None
        faults, dispatch, decode = self._faults, self._dispatch, decode_envelope
        try:
            for payload in self._frames:
                frame: Frame | None = None
                try:
                    item: Frame | Batch
                    if payload.startswith(TELLS_TAG):  # tells at once (see actors._wire)
                        item = self._batch(payload)
                        if faults.active:  # each tell meets the faults on its own
                            self._faulty_tells(item)
                            continue
                    else:
                        item = frame = decode(payload)
                        if faults.active:
                            delay = faults.decide("in")
                            if delay is None:
                                continue
                            if delay:
                                self._start_soon(self._dispatch_later, delay, frame)
                                continue
                    queue = self._queues.get(item.to) if self._queues else None
                    if queue is not None and item.kind not in _UNQUEUED:
                        queue.append((item, len(payload)))  # behind the one waiting
                        self._queued += len(payload)
                        if self._queued > MAX_QUEUED_BYTES:
                            return self._until_room()
                        continue
                    pending = dispatch(item) if isinstance(item, Frame) else self._tells(item)
                    if pending is not None:  # a full mailbox: delivered by a task of its own
                        self._wait_room(item.to, pending)
                        continue
                except msgspec.DecodeError as exc:
                    self._on_bad_frame(BadFrame(f"malformed frame: {exc}"), None)
                    continue
                except BadFrame as exc:
                    self._on_bad_frame(exc, frame)
                    continue
                if pending is not None:
                    return pending
                if enough is not None and enough():
                    return None
        except BadFrame as exc:  # from the splitter: a length past the limit
            self._on_bad_frame(exc, None)
        self._more = False
        return None

    async def _dispatch_waiting(self, pending: Awaitable[None], enough: Callable[[], object] | None) -> None:
        """Finish a dispatch that must wait, then the rest of the backlog."""
        next_wait: Awaitable[None] | None = pending
        while next_wait is not None:
            await next_wait
            next_wait = self._dispatch_backlog(enough)

    def _wait_room(self, to: str, pending: Awaitable[None]) -> None:
        """A delivery to ``to`` must wait for room: a task of its own finishes it, and delivers
        the messages read after it for ``to`` (the others are delivered at once meanwhile)."""
        self._queues[to] = deque([(pending, 0)])
        self._start_soon(self._drain, to)

    async def _drain(self, to: str) -> None:
        """Deliver the messages queued for ``to`` in order, each once its mailbox has room (the
        link's end waits for them, as it waited for a delivery before reading on)."""
        queue, dispatch = self._queues[to], self._dispatch
        try:
            while queue:
                item, size = queue.popleft()
                self._queued -= size
                if self._room is not None and self._queued <= MAX_QUEUED_BYTES:
                    self._room.set()
                    self._room = None
                if isinstance(item, (Frame, Batch)):
                    try:
                        pending = dispatch(item) if isinstance(item, Frame) else self._tells(item)
                    except msgspec.DecodeError as exc:
                        self._on_bad_frame(BadFrame(f"malformed frame: {exc}"), None)
                        continue
                    except BadFrame as exc:
                        self._on_bad_frame(exc, item if isinstance(item, Frame) else None)
                        continue
                    if pending is None:
                        continue
                    item = pending
                await item
        finally:
            del self._queues[to]
            if self._room is not None:
                self._room.set()
                self._room = None

    async def _until_room(self) -> None:
        """Back pressure: wait until the queued messages are below MAX_QUEUED_BYTES."""
        while self._queues and self._queued > MAX_QUEUED_BYTES:
            if self._room is None:
                self._room = new_event()
            await self._room.wait()

    def _batch(self, payload: bytes) -> Batch:
        """A TELLS frame's envelope; BadFrame on a link that takes none (a process link)."""
        if self._on_tells is None:
            raise BadFrame("a TELLS frame on a link that takes none")
        return decode_batch(payload)

    def _tells(self, batch: Batch) -> Awaitable[None] | None:
        assert self._on_tells is not None  # (checked by _batch)
        return self._on_tells(batch)

    def _faulty_tells(self, batch: Batch) -> None:
        """The tells of a TELLS frame, each dropped, delayed or dispatched as the fault hook
        decides, as if each had come in a frame of its own (in order, unless delayed)."""
        for body in split_values(batch.body):
            frame = Frame(Kind.TELL, 0, batch.type, body, batch.to)
            delay = self._faults.decide("in")
            if delay is None:
                continue
            if delay:
                self._start_soon(self._dispatch_later, delay, frame)
                continue
            queue = self._queues.get(batch.to)
            if queue is not None:  # behind the one waiting for room
                queue.append((frame, len(body)))
                self._queued += len(body)
                continue
            pending = self._dispatch(frame)
            if pending is not None:  # a full mailbox: delivered by a task of its own
                self._wait_room(batch.to, pending)

    async def _dispatch_later(self, delay: float, frame: Frame) -> None:
        await anyio.sleep(delay)
        try:
            pending = self._dispatch(frame)
            if pending is not None:
                await pending
        except BadFrame as exc:
            self._on_bad_frame(exc, frame)

    def _end(self) -> None:
        self.ended = True
        if self.holder is not self._task:
            handback, self._handback = self._handback, None
            if handback is not None:
                handback.set()

    def close(self) -> None:
        """The link is over: nobody may read again; wake and release the descriptor."""
        self.ended = True
        self._calls.notify_closing(self._fd)
        os.close(self._fd)
        while self._stalled:
            stalled = self._stalled.popleft()
            if isinstance(stalled, Coroutine):
                stalled.close()  # a delivery nobody will wait for now (its frame is lost with the link)
        for queue in self._queues.values():
            while queue:
                item = queue.popleft()[0]
                if isinstance(item, Coroutine):
                    item.close()
        self._queued = 0


def first_step(coro: Coroutine[Any, Any, T], reader: LinkReader, task: Any) -> tuple[bool, Any]:
    """Start ``coro`` in ``task``, which holds the reading: (True, its result) when it finishes
    without waiting, else (False, an awaitable that runs the rest and gives the reading back
    the first time the coroutine waits for anything other than the socket).

    A handler that answers at once keeps the reading (nobody else could have run meanwhile);
    one that waits (on I/O, a lock, a sleep) must not leave the link unread while it does.
    Its exceptions propagate from here, or from the awaitable.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    if reader.holder is task and reader.parked is not task:
        reader.give_back()
    return False, _GiveBackOnWait(coro, yielded, reader, task)


class _GiveBackOnWait(Awaitable[T]):
    """The rest of a coroutine after its first step; see first_step."""

    __slots__ = ("_coro", "_reader", "_task", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, T], yielded: Any, reader: LinkReader, task: Any) -> None:
        self._coro = coro
        self._yielded = yielded
        self._reader = reader
        self._task = task

    def __await__(self) -> Generator[Any, Any, T]:
        # What ``yield from coro`` does, from its second step on, with a look at the reading
        # at each suspension.
        coro, reader, task = self._coro, self._reader, self._task
        yielded = self._yielded
        while True:
            sent: Any = None
            thrown: BaseException | None = None
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                thrown = exc
            try:
                yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                return cast(T, stop.value)
            if reader.holder is task and reader.parked is not task:
                reader.give_back()
