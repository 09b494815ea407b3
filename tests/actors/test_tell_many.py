"""Ref.tell_many: a run of messages sent in one call, with the semantics of the same tells one
after another (order, a later ask after them all, back pressure, MailboxFull for the nowait
form, the fault hooks per message), in-process, over a process link and over a TLS link."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from actors import LinkOptions, MailboxFull, Ref, open_system
from actors._link import FLUSH_BYTES, LIMIT_BYTES
from actors._net import BATCH_BYTES, Peer
from actors._wire import TELLS_TAG, FrameSplitter, decode_batch, decode_values
from tests.actors.sample_actors import Add, Block, Get, Recorder
from tests.actors.tls_kit import cluster
from tests.actors.tls_node import Note

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]

KINDS = ["local", "process", "tls"]


@contextlib.asynccontextmanager
async def recorder(kind: str, tmp_path: Path, mailbox_size: int) -> AsyncIterator[Ref]:
    """A Recorder (tests.actors.sample_actors) in this process, in a child process, or
    registered on a node at the far end of a TLS link."""
    if kind == "tls":
        async with cluster(tmp_path) as c:
            c.system.register("rec", await c.system.spawn(Recorder, name="rec", mailbox_size=mailbox_size))
            yield c.good.ref("rec")
        return
    async with open_system() as system:
        if kind == "local":
            yield await system.spawn(Recorder, name="rec", mailbox_size=mailbox_size)
        else:
            yield await system.spawn_process(
                "tests.actors.sample_actors:Recorder", name="rec", mailbox_size=mailbox_size
            )


@pytest.mark.parametrize("kind", KINDS)
async def test_runs_of_messages_arrive_in_order_before_a_later_ask(kind: str, tmp_path: Path) -> None:
    async with recorder(kind, tmp_path, mailbox_size=3) as ref:  # (a small mailbox: they wait)
        await ref.tell(Block(0.2))  # its mailbox fills, then what waits for it
        expected: list[Any] = []
        with anyio.fail_after(30):
            for round_ in range(4):
                # Runs of one type (one frame each over a link) and of another, and types mixed.
                batch: list[Any] = [Add(i) for i in range(round_ * 10_000, (round_ + 1) * 10_000)]
                batch += [f"s{i}" for i in range(50)] + [Add(-1), None, "x", 7, Add(-2)]
                await ref.tell_many(batch)
                expected += [m.amount if isinstance(m, Add) else m for m in batch]
                state = await ref.ask(Get())  # handled after every message told before it
                assert len(state["seen"]) == len(expected)
            assert state["seen"] == expected
            await ref.tell_many(iter([Add(1), Add(2)]))  # any iterable
            await ref.tell_many([])
            assert (await ref.ask(Get()))["seen"][-2:] == [1, 2]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_nowait_form_sends_what_fits_and_says_how_many(kind: str, tmp_path: Path) -> None:
    async with recorder(kind, tmp_path, mailbox_size=1000) as ref:
        ref.tell_many_nowait([Add(1), Add(2), "three"])
        with anyio.fail_after(20):
            assert (await ref.ask(Get()))["seen"] == [1, 2, "three"]


async def test_a_local_actor_s_full_mailbox_holds_the_sender_back_and_refuses_the_rest() -> None:
    gate = anyio.Event()

    class Gated(Recorder):
        async def receive(self, message: Any) -> Any:
            if message == "hold":
                await gate.wait()
            return await super().receive(message)

    async with open_system() as system:
        ref = await system.spawn(Gated, name="gated", mailbox_size=5)
        await ref.tell("hold")  # taken: the actor waits in its handler
        with anyio.fail_after(10):
            while not _mailbox_empty(ref):  # until the actor took "hold"
                await anyio.lowlevel.checkpoint()
        with pytest.raises(MailboxFull) as refused:
            ref.tell_many_nowait(range(10))
        assert refused.value.sent == 5  # the first five, in the five free places
        done = anyio.Event()

        async def send() -> None:
            await ref.tell_many(range(100, 200))
            done.set()

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(send)
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            assert not done.is_set()  # the mailbox is full: the sender waits
            gate.set()
            with anyio.fail_after(10):
                await done.wait()
        with anyio.fail_after(10):
            seen = (await ref.ask(Get()))["seen"]
        assert seen == ["hold", *range(5), *range(100, 200)]


def _mailbox_empty(ref: Ref) -> bool:
    return len(ref._target._mailbox) == 0  # type: ignore[attr-defined]


async def test_a_batch_to_an_unreachable_node_waits_for_the_writer_and_keeps_its_order() -> None:
    async with open_system() as system:
        peer = Peer(system, "far", LinkOptions())  # never linked: its frames stay queued
        outbox = peer.outbox
        messages = [*range(200_000), Note("end")]
        done = anyio.Event()

        async def send() -> None:
            await peer.ref("a").tell_many(messages)
            done.set()

        splitter, payloads = FrameSplitter(), []
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(send)
            with anyio.fail_after(20):
                while not done.is_set():
                    await anyio.lowlevel.checkpoint()
                    if outbox.buffer:
                        # Back pressure: never much more than FLUSH_BYTES waits for the writer.
                        assert len(outbox.buffer) < FLUSH_BYTES + 2 * BATCH_BYTES
                        payloads += splitter.feed(await outbox.take())
        payloads += splitter.feed(await outbox.take()) if outbox.buffer else []
        assert all(payload.startswith(TELLS_TAG) for payload in payloads)
        assert all(len(payload) < 2 * BATCH_BYTES for payload in payloads)
        batches = [decode_batch(payload) for payload in payloads]
        assert {batch.to for batch in batches} == {"a"}
        received = [m for batch in batches for m in decode_values(batch.type, batch.body)]
        assert received == messages
        total = sum(len(payload) for payload in payloads)
        assert len(batches) <= total // (BATCH_BYTES // 2) + 2  # frames of ~64 KiB, not a few
        peer.close()


async def test_the_nowait_form_on_a_full_link_says_how_many_went() -> None:
    async with open_system() as system:
        peer = Peer(system, "far", LinkOptions())  # never linked: nothing drains
        messages = [f"message {i:08}" for i in range(200_000)]  # ~4 MiB of frames
        with pytest.raises(MailboxFull) as refused:
            peer.ref("a").tell_many_nowait(messages)
        sent = refused.value.sent
        assert 0 < sent < len(messages)
        assert LIMIT_BYTES <= len(peer.outbox.buffer) < LIMIT_BYTES + 2 * BATCH_BYTES
        payloads = FrameSplitter().feed(await peer.outbox.take())
        received = [m for p in payloads for m in decode_values("", decode_batch(p).body)]
        assert received == messages[:sent]  # exactly those it said went, in order
        peer.close()


async def test_a_message_that_cannot_be_encoded_stops_the_batch_where_it_is() -> None:
    async with open_system() as system:
        peer = Peer(system, "far", LinkOptions())  # never linked: its frames stay queued
        with pytest.raises(OverflowError):
            await peer.ref("a").tell_many([Add(1), Add(2), Add(2**70), Add(3)])  # msgpack: no such int
        await peer.ref("a").tell(Add(4))
        payloads = FrameSplitter().feed(await peer.outbox.take())
        received = [m for p in payloads for m in decode_values(decode_batch(p).type, decode_batch(p).body)]
        assert received == [Add(1), Add(2), Add(4)]  # those before it went, whole; none after
        peer.close()


@pytest.mark.parametrize("direction", ["in", "out"])
async def test_the_fault_hooks_drop_each_message_of_a_batch_on_its_own(
    direction: str, tmp_path: Path
) -> None:
    async with cluster(tmp_path) as c:
        c.system.register("rec", await c.system.spawn(Recorder, name="rec"))
        # "in": the frames as the receiving node reads them; "out": as the sending node writes them.
        faults = c.listener.peers["good"].faults if direction == "in" else c.good.faults
        faults.reseed(7)
        faults.drop(0.5, direction=direction)
        ref = c.good.ref("rec")
        await ref.tell_many([Add(i) for i in range(2000)])
        seen = None
        with anyio.fail_after(30):
            while seen is None:  # (each ask may be lost too)
                with contextlib.suppress(TimeoutError):
                    seen = (await ref.ask(Get(), timeout=0.5))["seen"]
        faults.clear()
        assert 800 < len(seen) < 1200  # about half of them, each on its own
        assert seen == sorted(seen)  # in order (no delay was asked for)


class Collecting:
    """A Ref target of another kind (no deliver_many): a tell each."""

    def __init__(self, room: int) -> None:
        self.name = "collecting"
        self.got: list[Any] = []
        self._room = room

    async def deliver(self, message: Any, reply: Any) -> None:
        self.got.append(message)

    def deliver_nowait(self, message: Any, reply: Any) -> None:
        if len(self.got) >= self._room:
            raise MailboxFull("full")
        self.got.append(message)


async def test_a_target_of_another_kind_gets_a_tell_each() -> None:
    target = Collecting(room=3)
    ref = Ref(target)  # type: ignore[arg-type]
    await ref.tell_many(["a", "b"])
    with pytest.raises(MailboxFull) as refused:
        ref.tell_many_nowait(["c", "d"])
    assert refused.value.sent == 1
    assert target.got == ["a", "b", "c"]
