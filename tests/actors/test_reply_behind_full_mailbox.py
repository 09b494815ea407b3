"""An answer from a child is never stuck behind the child's tells waiting for room in a full
mailbox: the actor whose mailbox is full may be the one waiting for that answer."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import Actor, Ref, open_system
from tests.actors.flood_actors import Flood

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]  # on trio and on asyncio

N = 5000


class Parent(Actor):
    """On "go": spawns the flooder, starts its flood and asks it inline while the flood runs
    (its own mailbox, of two, is full meanwhile); records the numbers the flood tells it."""

    def __init__(self, got_all: anyio.Event) -> None:
        self.got_all = got_all
        self.seen: list[int] = []
        self.child: Ref | None = None

    async def receive(self, message: Any) -> Any:
        if message == "go":
            self.child = await self.spawn_process("tests.actors.flood_actors:Flooder", name="flooder")
            assert await self.child.ask(Flood(N)) == "flooding"
            answers = [await self.child.ask(k, timeout=30) for k in range(20)]
            return answers
        if message == "seen":
            return self.seen
        self.seen.append(message)
        if len(self.seen) == N:
            self.got_all.set()
        return None


async def test_an_actor_with_a_full_mailbox_gets_its_answers_from_the_child_flooding_it() -> None:
    got_all = anyio.Event()
    async with open_system() as system:
        parent = await system.spawn(lambda: Parent(got_all), name="parent", mailbox_size=2)
        with anyio.fail_after(20):  # deadlocked before: the answers were never read
            assert await parent.ask("go", timeout=30) == list(range(20))
            await got_all.wait()
        assert await parent.ask("seen") == list(range(N))  # in the order the child told them
