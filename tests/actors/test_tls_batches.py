"""Tells over a network link travel in TELLS frames (many tells of one type to one actor in one
frame, decoded and put in the mailbox at once): the order of every sender's messages, the
mailbox bound and the fault hooks (per tell) are kept."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from actors import Actor, LinkOptions, open_system
from actors._net import Peer
from actors._wire import TELLS_TAG, FrameSplitter, decode_batch, decode_frame, decode_values
from tests.actors.tls_kit import cluster
from tests.actors.tls_node import Note

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


async def test_tells_in_a_row_to_one_actor_leave_in_one_frame() -> None:
    async with open_system() as system:
        peer = Peer(system, "far", LinkOptions())  # never linked: its frames stay queued
        a, b = peer.ref("a"), peer.ref("b")
        for i in range(100):
            await a.tell(i)
        for text in ("x", "y"):
            await a.tell(Note(text))  # another type: another frame
        await b.tell(100)  # another actor: another frame
        await a.tell(101)
        payloads = FrameSplitter().feed(await peer.outbox.take())
        assert all(payload.startswith(TELLS_TAG) for payload in payloads)
        batches = [decode_batch(payload) for payload in payloads]
        assert [(batch.to, decode_values(batch.type, batch.body)) for batch in batches] == [
            ("a", list(range(100))),
            ("a", [Note("x"), Note("y")]),
            ("b", [100]),
            ("a", [101]),
        ]
        peer.close()


async def test_an_ask_between_tells_keeps_its_place() -> None:
    async with open_system() as system:
        peer = Peer(system, "far", LinkOptions())
        a = peer.ref("a")
        for i in range(3):
            await a.tell(i)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(a.ask, "between")
            with anyio.fail_after(10):
                while not peer.outbox.pending:
                    await anyio.lowlevel.checkpoint()
            await a.tell(3)
            payloads = FrameSplitter().feed(await peer.outbox.take())
            task_group.cancel_scope.cancel()
        assert [p.startswith(TELLS_TAG) for p in payloads] == [True, False, True]
        assert decode_frame(payloads[1]).to == "a"
        assert decode_values("", decode_batch(payloads[2]).body) == [3]
        peer.close()


class Recorder(Actor):
    """Keeps every message; answers "seen" with them all."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def receive(self, message: Any) -> Any:
        if message == "seen":
            return self.seen
        self.seen.append(message)
        return None


async def test_tells_keep_their_order_through_a_small_mailbox_beside_asks(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        for name, size in (("small", 3), ("big", 1000)):
            c.system.register(name, await c.system.spawn(Recorder, name=name, mailbox_size=size))
        small, big = c.good.ref("small"), c.good.ref("big")
        expected: dict[str, list[Any]] = {"small": [], "big": []}
        for i in range(5000):
            ref = small if (i // 300) % 2 == 0 else big
            await ref.tell(i)
            expected[ref.name.split("@")[0]].append(i)
            if i % 1000 == 999:
                assert await small.ask(f"mark {i}") is None  # an ask among the tells keeps its place
                expected["small"].append(f"mark {i}")
        with anyio.fail_after(30):
            assert await small.ask("seen") == expected["small"]
            assert await big.ask("seen") == expected["big"]


class Counter(Actor):
    """Counts the ints it is told; answers "count"."""

    def __init__(self) -> None:
        self.count = 0

    async def receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        self.count += 1
        return None


async def test_the_fault_hooks_drop_tells_one_by_one_not_whole_frames(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        c.system.register("counter", await c.system.spawn(Counter, name="counter"))
        faults = c.listener.peers["good"].faults  # frames from the good node, as they come in
        faults.reseed(7)
        faults.drop(0.5, direction="in")
        counter = c.good.ref("counter")
        for i in range(2000):
            await counter.tell(i)
        count = None
        with anyio.fail_after(30):
            while count is None:  # (each ask may be lost too)
                with contextlib.suppress(TimeoutError):
                    count = await counter.ask("count", timeout=0.5)
        faults.clear()
        assert 800 < count < 1200  # about half of the tells, each on its own
