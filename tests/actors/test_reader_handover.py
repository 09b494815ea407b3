"""The reading of a link changes hands without losing or reordering a frame: a chunk read just
before the reader's fairness yield is dispatched by whoever holds the reading after it, in
order, even when the task that read it gave the reading back (a handler that waited) or was
cancelled (an asker that gave up) during that yield."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import anyio
import pytest

from actors._link import LinkFaults
from actors._reader import FAIRNESS_READS, LinkReader, first_step
from actors._wire import Frame, Kind, append_frame

pytestmark = [pytest.mark.timeout(30), pytest.mark.anyio]  # on trio and on asyncio


def _chunk(numbers: range) -> bytes:
    buffer = bytearray()
    for n in numbers:
        append_frame(buffer, Kind.TELL, 0, n)
    return bytes(buffer)


class Scripted:
    """A link socket whose reads return the given chunks (b"": that read would block), then
    would block (its descriptor, one end of a socketpair, never becomes readable unless a test
    writes to the other end)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pair = socket.socketpair()
        self.exhausted = anyio.Event()  # a read found no chunk left

    def recv(self, size: int, /) -> bytes:
        chunk = next(self._chunks, None)
        if chunk is None:
            self.exhausted.set()
        if not chunk:
            raise BlockingIOError
        return chunk

    def send(self, data: bytes | bytearray | memoryview, /) -> int:
        return len(data)

    def fileno(self) -> int:
        return self._pair[0].fileno()

    def setblocking(self, flag: bool, /) -> None:
        pass

    def close(self) -> None:
        for sock in self._pair:
            sock.close()


class Recorded:
    """A reader over two scripted chunks (frames 0-4, then 5-9) whose dispatch records each
    number and whether the task dispatching it held the reading."""

    def __init__(self) -> None:
        self.sock = Scripted([_chunk(range(5)), _chunk(range(5, 10))])
        self.seen: list[int] = []
        self.all_seen = anyio.Event()
        self.strays: list[int] = []  # numbers dispatched by a task that did not hold the reading
        self.reader = LinkReader(self.sock, self._dispatch, self._bad, LinkFaults(), self._start_soon)

    def _dispatch(self, frame: Frame) -> None:
        number = int(bytes(frame.body)[0])
        if not self.reader.holds():
            self.strays.append(number)
        self.seen.append(number)
        if len(self.seen) == 10:
            self.all_seen.set()

    def _bad(self, exc: Exception, frame: Frame | None) -> None:
        raise AssertionError(f"bad frame: {exc}")

    def _start_soon(self, *args: object) -> None:
        raise AssertionError("nothing here waits for room")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


async def test_a_handler_that_waits_at_the_fairness_yield_leaves_its_chunk_to_the_next_reader() -> None:
    link = Recorded()
    reader = link.reader
    try:
        assert reader.borrow()  # this task reads (as an actor does while it handles a message)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(reader.run)  # waits for the reading to be given back

            async def handler() -> None:  # asks across the link it holds: reads for its answer
                while reader.holds() and not link.all_seen.is_set():
                    await reader.read_once()

            reader._reads = FAIRNESS_READS - 1  # the next read that does not wait yields
            done, rest = first_step(handler(), reader, reader.holder)
            if not done:
                await rest  # (its first wait, the fairness yield, gave the reading back)
            with anyio.fail_after(10):
                await link.all_seen.wait()
            task_group.cancel_scope.cancel()
        assert link.seen == list(range(10))  # before: 5-9 first, read by the reader task meanwhile
        assert link.strays == []  # before: 0-4 dispatched by a task that had given the reading back
    finally:
        link.close()


async def test_an_asker_cancelled_at_the_fairness_yield_loses_no_frame() -> None:
    link = Recorded()
    reader = link.reader
    try:
        assert reader.borrow()  # this task reads (as an asker does, for its answer)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(reader.run)
            reader._reads = FAIRNESS_READS - 1
            with anyio.CancelScope() as scope:
                scope.cancel()  # the asker gives up (its timeout, its caller's cancellation)
                await reader.read_once()
            reader.give_back()  # as wait_reply does on its way out
            with anyio.fail_after(10):
                await link.all_seen.wait()  # before: 0-4 were lost with the cancelled read
            task_group.cancel_scope.cancel()
        assert link.seen == list(range(10))
        assert link.strays == []
    finally:
        link.close()


class _WakeThenStall:
    """The reader task's first wait for the socket, as the event loop may run it: the socket
    becomes readable and the task is woken, but other tasks run before it does (here, until
    ``resume`` is set)."""

    def __init__(self, reader: LinkReader, pair: tuple[socket.socket, socket.socket]) -> None:
        self._wait_readable = reader._calls.wait_readable
        self._pair = pair
        self.waiting = anyio.Event()
        self.woken = anyio.Event()
        self.resume = anyio.Event()
        self._first = True

    async def wait_readable(self, fd: int) -> None:
        if not self._first:
            return await self._wait_readable(fd)
        self._first = False
        self.waiting.set()
        await self._wait_readable(fd)
        self._pair[0].recv(1)  # (the byte that woke it: the scripted reads stand for the data)
        self.woken.set()
        await self.resume.wait()


async def test_a_reader_task_woken_after_an_actor_borrowed_the_reading_leaves_it_the_backlog() -> None:
    """The link's reader task waits for the socket; data arrives and wakes it, but before it
    runs an idle actor borrows the reading (the reader task still looks parked), reads a chunk,
    fills its mailbox from it and hands the reading back with the rest of the chunk unread. The
    reader task, running at last, must dispatch that rest before it reads on: it once read the
    next chunk over it, and the rest was lost (the process-boundary back-pressure test lost two
    64 KiB writes of tells that way, once in three loaded CI runs)."""
    link = Recorded()
    reader = link.reader
    sock = link.sock
    sock._chunks = iter([b"", *sock._chunks])  # (b"": would block) the reader task waits first
    stall = _WakeThenStall(reader, sock._pair)
    reader._calls = dataclasses.replace(reader._calls, wait_readable=stall.wait_readable)
    try:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(reader.run)
            with anyio.fail_after(10):
                await stall.waiting.wait()
                sock._pair[1].send(b"!")  # readable: the reader task is woken
                await stall.woken.wait()
            assert reader.borrow()  # the actor, idle: the reader task is parked, to all it can see
            await reader.read_once(lambda: len(link.seen) >= 2)  # its mailbox holds two: full
            reader.give_back()  # (it handles them; the reading goes back to the reader task)
            stall.resume.set()
            with anyio.fail_after(10):
                await sock.exhausted.wait()  # every chunk read
            task_group.cancel_scope.cancel()
        assert link.seen == list(range(10))  # before: 2-4 were lost, read over by the reader task
        assert link.strays == []  # before: 5-9 were dispatched by a task that did not hold it
    finally:
        link.close()
