"""Who reads a link: askers and idle actors read their own answers; nothing is ever left unread.

An ask across processes is answered without a hand-over between tasks on either side (see
actors/_reader.py). These tests pin what that must never cost: a handler that waits still
leaves the link read (pings answered, other answers delivered), concurrent askers each get
their own answer, timeouts still fire, on both backends.
"""

from __future__ import annotations

import random

import anyio
import pytest
import trio

from actors import Actor, AskTimeout, ProcessOptions, open_system
from tests.actors.sample_actors import Add, AskParent, Get, Nap, Seen, Work

pytestmark = pytest.mark.timeout(60)


async def test_a_handler_that_waits_leaves_the_link_read() -> None:
    """While the child's actor naps in a handler, its pings and other traffic still flow."""
    # The nap outlasts the ping timeout well: an unread link would fail the child for sure;
    # the timeout still leaves a loaded machine room to answer a ping that was read.
    quick_pings = ProcessOptions(ping_interval=0.2, ping_timeout=2.0)
    async with open_system() as system:
        ref = await system.spawn_process(
            "tests.actors.sample_actors:Recorder", name="napper", options=quick_pings
        )
        pid = ref.pid
        await ref.ask(Get())  # from now on the idle actor reads its link itself
        async with anyio.create_task_group() as tg:

            async def nap() -> None:
                assert await ref.ask(Nap(5.0)) == "rested"

            tg.start_soon(nap)
            await ref.tell(Add(1))  # queued behind the nap
            assert await ref.ask(Get(), timeout=20) == {"total": 1, "seen": [1], "prefix": ""}
        # Unanswered pings for 5 s would have restarted it: same process, same state.
        assert ref.pid == pid
        assert (await ref.ask(Get()))["total"] == 1


async def test_concurrent_askers_each_get_their_own_answer() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="echo")
        answers: dict[int, object] = {}

        async def asker(i: int) -> None:
            for round_ in range(20):
                if random.random() < 0.3:
                    await anyio.lowlevel.checkpoint()
                answers[i * 100 + round_] = await ref.ask(f"m{i}-{round_}")

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(asker, i)
        assert answers == {i * 100 + r: f"m{i}-{r}" for i in range(40) for r in range(20)}


async def test_a_child_asking_its_parent_in_a_loop_while_the_parent_asks_it() -> None:
    """Both ends read for themselves at once: neither may wait on the other's reading."""

    class Parent(Actor):
        async def receive(self, message: object) -> object:
            return f"ok:{message}"

    async with open_system() as system:
        parent = await system.spawn(Parent, name="parent")
        child = await system.spawn_process("tests.actors.sample_actors:Recorder", name="child", parent=parent)
        async with anyio.create_task_group() as tg:

            async def parent_asks() -> None:
                for i in range(300):
                    assert await child.ask(i) == i

            tg.start_soon(parent_asks)
            for i in range(100):
                assert await child.ask(AskParent(f"q{i}")) == f"ok:q{i}"


async def test_a_timed_out_ask_is_forgotten_and_the_actor_serves_on() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="sleepy")
        with anyio.fail_after(20):
            with pytest.raises(AskTimeout, match=r"did not answer Nap within 0\.2 s"):
                await ref.ask(Nap(1.0), timeout=0.2)
        # The late answer to the nap arrives meanwhile and is dropped; ours is the next one.
        assert await ref.ask(Add(5)) == 5
        assert ref._target.outbox.pending == {}  # type: ignore[attr-defined]


async def test_local_ask_timeouts_follow_the_clock_of_the_run(autojump_clock: trio.abc.Clock) -> None:
    class Never(Actor):
        async def receive(self, message: object) -> object:
            await anyio.sleep(3600)
            return None

    async with open_system() as system:
        ref = await system.spawn(Never, name="never")
        start = anyio.current_time()
        with pytest.raises(AskTimeout):
            await ref.ask("hello", timeout=7)
        assert anyio.current_time() - start == pytest.approx(7, abs=0.01)
        # A shorter timeout registered after a longer one still fires first.
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _expect_timeout(ref, 100))
            await anyio.sleep(1)
            start = anyio.current_time()
            with pytest.raises(AskTimeout):
                await ref.ask("again", timeout=2)
            assert anyio.current_time() - start == pytest.approx(2, abs=0.01)
            tg.cancel_scope.cancel()


async def _expect_timeout(ref: object, timeout: float) -> None:
    with pytest.raises(AskTimeout):
        await ref.ask("long", timeout=timeout)  # type: ignore[attr-defined]


@pytest.mark.anyio  # on trio and on asyncio (the anyio_backend fixture, tests/conftest.py)
async def test_process_asks_and_timeouts_on_every_backend() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="proc")
        answers: list[object] = [await ref.ask(i) for i in range(50)]
        try:
            await ref.ask(Nap(1.0), timeout=0.2)
        except AskTimeout:
            answers.append("timed out")
        answers.append(await ref.ask(Add(2)))
    assert answers == [*range(50), "timed out", 2]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_mixed_load_keeps_every_answer_and_every_sender_s_order(seed: int) -> None:
    """Several senders tell and ask at once; handlers answer at once, nap, or ask the parent
    back. Every ask gets its own answer and each sender's messages are handled in its order,
    whoever happens to be reading the link at each moment."""
    rng = random.Random(seed)
    plans = {
        sender: [
            (rng.random() < 0.5, rng.choice([0.0, 0.0, 0.0, 0.001, 0.005]), rng.random() < 0.2)
            for _ in range(60)
        ]
        for sender in range(6)
    }

    class Parent(Actor):
        async def receive(self, message: object) -> object:
            if rng.random() < 0.3:
                await anyio.sleep(0.001)
            return message

    async with open_system() as system:
        parent = await system.spawn(Parent, name="parent")
        child = await system.spawn_process(
            "tests.actors.sample_actors:Recorder", name="worker", parent=parent
        )

        async def sender(who: int) -> None:
            for n, (ask, nap, ask_parent) in enumerate(plans[who]):
                work = Work(sender=who, n=n, nap=nap, ask_parent=ask_parent)
                if ask:
                    assert await child.ask(work, timeout=30) == n
                else:
                    await child.tell(work)

        with anyio.fail_after(45):
            async with anyio.create_task_group() as tg:
                for who in plans:
                    tg.start_soon(sender, who)
            seen = await child.ask(Seen())
    assert seen == {who: list(range(60)) for who in plans}
