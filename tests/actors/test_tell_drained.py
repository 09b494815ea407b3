"""A tell that waits for room in a link's buffer goes on once the buffer is emptied, whichever
way it was: taken by the writer task, or written straight to the socket with an ask or an
answer (the writer then finds nothing to write)."""

from __future__ import annotations

import anyio
import pytest

from actors import Actor, open_system
from actors._link import FLUSH_BYTES, LinkFaults, Outbox
from actors._wire import Kind
from tests.actors.drain_actors import Race, Told

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]  # on trio and on asyncio


class Parent(Actor):
    """Keeps the sizes of what it is told."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def receive(self, message: object) -> object:
        if isinstance(message, bytes):
            self.sizes.append(len(message))
            return None
        return self.sizes


async def test_a_tell_to_the_parent_flushed_with_an_answer_returns() -> None:
    """Seen for real: a host simulator's heartbeat task waited for good in `parent.tell`."""
    async with open_system() as system:
        parent = await system.spawn(Parent, name="parent")
        child = await system.spawn_process(
            "tests.actors.drain_actors:RaceTeller", name="teller", parent=parent
        )
        size = FLUSH_BYTES + 1024
        assert await child.ask(Race(size), timeout=20) == "queued"
        with anyio.fail_after(20):  # before: the tell waited until some later tell
            assert await child.ask(Told(), timeout=20) == "told"
        assert await parent.ask("sizes") == [size]  # it went, once


class _Held:
    """The wake-up of a link's idle writer task, held: the writer is woken but does not run."""

    def __init__(self, outbox: Outbox) -> None:
        assert outbox._wake is not None
        self.woken = False
        outbox._wake = self  # type: ignore[assignment]

    def set(self) -> None:
        self.woken = True


async def test_a_tell_waiting_for_room_returns_when_a_direct_send_empties_the_buffer_in_part() -> None:
    """Part of the buffer written at once, the rest goes first with the control frames: the
    buffer is empty, and the tell goes on even if that link ends before its writer runs."""
    outbox = Outbox("peer", LinkFaults())
    written: list[bytes] = []

    def send_half(data: bytes | bytearray) -> int:  # the socket takes half of it
        written.append(bytes(data[: len(data) // 2]))
        return len(data) // 2

    told = anyio.Event()

    async def tell() -> None:
        await outbox.deliver(b"x" * FLUSH_BYTES, None)  # wakes the writer, waits for room
        told.set()

    async with anyio.create_task_group() as senders:
        async with anyio.create_task_group() as link:
            outbox.direct_send = send_half
            link.start_soon(outbox.take)  # the link's writer, idle
            await anyio.wait_all_tasks_blocked()
            held = _Held(outbox)
            senders.start_soon(tell)
            await anyio.wait_all_tasks_blocked()
            assert held.woken and not told.is_set()
            outbox.control(Kind.PONG, 1, None)  # goes at once, the tell with it, in part
            assert written and not outbox.buffer
            link.cancel_scope.cancel()  # the link ends before its writer ran
        outbox.direct_send = None
        outbox.lose_written()  # (the rest of a frame cut short cannot go on another link)
        with anyio.fail_after(10):
            await told.wait()  # before: it waited for a later tell
