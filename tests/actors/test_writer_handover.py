"""An outbox outlives its link (a child restarts, a node reconnects): the writer of the next
link is never written around, even when the last one's writer was cut off while idle."""

from __future__ import annotations

import anyio
import pytest

from actors._link import LinkFaults, Outbox
from actors._wire import Kind

pytestmark = [pytest.mark.timeout(30), pytest.mark.anyio]  # on trio and on asyncio


async def test_frames_queued_while_the_next_writer_writes_wait_for_it() -> None:
    outbox = Outbox("peer", LinkFaults())
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(outbox.take)  # the first link's writer, idle
        await anyio.wait_all_tasks_blocked()
        task_group.cancel_scope.cancel()  # its link ends
    outbox.control(Kind.PING, 1, None)  # queued while no link runs
    direct: list[bytes] = []

    def send(data: bytes | bytearray) -> int:
        direct.append(bytes(data))
        return len(data)

    outbox.direct_send = send  # the next link's socket
    first = await outbox.take()  # its writer takes the ping and writes it (in parts, say)
    assert first
    outbox.control(Kind.PONG, 2, None)  # meanwhile: must queue behind, not go around it
    assert direct == []  # before: written at once, into the middle of the writer's frames
    assert await outbox.take()  # the writer takes it next
