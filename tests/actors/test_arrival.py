"""Actor.on_arrival: a hook sees each message as it enters the mailbox, before the messages
ahead of it are handled, and before it waits for room in a full mailbox."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import Actor, open_system

pytestmark = pytest.mark.anyio


class Gated(Actor):
    """Notes arrivals (in the sender's task) and handles each message once the gate opens."""

    def __init__(self, arrived: list[Any], handled: list[Any], gate: anyio.Event, five: anyio.Event) -> None:
        self.arrived, self.handled, self.gate, self.five = arrived, handled, gate, five

    async def on_start(self) -> None:
        self.on_arrival(self.note)

    def note(self, message: Any) -> None:
        self.arrived.append(message)
        if len(self.arrived) == 5:
            self.five.set()

    async def receive(self, message: Any) -> Any:
        await self.gate.wait()
        self.handled.append(message)
        return len(self.handled)


async def test_messages_are_seen_as_they_arrive_not_when_handled() -> None:
    arrived: list[Any] = []
    handled: list[Any] = []
    gate, five = anyio.Event(), anyio.Event()
    async with open_system() as system:
        ref = await system.spawn(lambda: Gated(arrived, handled, gate, five), name="gated", mailbox_size=2)
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(ref.tell, i)  # the last ones wait for room in the mailbox
            with anyio.fail_after(5):
                await five.wait()
            assert sorted(arrived) == [0, 1, 2, 3, 4] and handled == []
            gate.set()
        assert await ref.ask("last") == 6
    assert arrived[-1] == "last" and sorted(handled[:5]) == [0, 1, 2, 3, 4]
