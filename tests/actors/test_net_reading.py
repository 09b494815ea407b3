"""An idle actor that a network link delivers to reads that link itself; it must never wait,
holding the link, for room in another actor's mailbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import Actor, Ref
from tests.actors.tls_kit import Echo, cluster

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


class Busy(Actor):
    """One message at a time (mailbox of one); on "wait" it waits for ``go``, then asks each of
    ``others``, the actors that may be reading the link."""

    def __init__(self, go: anyio.Event, others: list[Ref], seen: list[Any]) -> None:
        self.go = go
        self.others = others
        self.seen = seen

    async def receive(self, message: Any) -> Any:
        if message == "wait":
            await self.go.wait()
            for other in self.others:
                self.seen.append(await other.ask("are you there?", timeout=5))
        self.seen.append(message)
        return len(self.seen)


async def test_a_reading_actor_leaves_a_full_mailbox_to_the_links_reader(tmp_path: Path) -> None:
    go = anyio.Event()
    seen: list[Any] = []
    async with cluster(tmp_path) as c:
        helper = await c.system.spawn(Echo, name="helper")
        c.system.register("helper", helper)
        echo = c.system.registered("echo")
        assert echo is not None
        busy = await c.system.spawn(lambda: Busy(go, [echo, helper], seen), name="busy", mailbox_size=1)
        c.system.register("busy", busy)
        assert await c.good.ref("helper").ask("hello") == "hello"
        # An idle actor the link delivered to (echo or helper) reads the link now.
        reader = c.listener.peers["good"].outbox.reader
        assert reader is not None and reader.holder is not None and reader.holder is not reader._task
        for message in ("wait", "fill", "extra"):  # the last must wait for room in busy's mailbox
            await c.good.ref("busy").tell(message)
        await anyio.sleep(0.2)  # (no condition to wait for: the frames are on their way)
        go.set()  # busy asks both now: the one reading the link must be free to answer
        with anyio.fail_after(20):
            assert await c.good.ref("busy").ask("done") == 6
        assert seen == ["are you there?", "are you there?", "wait", "fill", "extra", "done"]
