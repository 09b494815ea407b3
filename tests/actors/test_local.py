"""In-process actors: ordering, asks, backpressure, stopping; each test on trio and on asyncio."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import Actor, ActorDead, ActorError, AskTimeout, MailboxFull, open_system
from tests.actors.sample_actors import Add, Fail, Get, Recorder, Slow

pytestmark = pytest.mark.anyio  # the anyio_backend fixture (tests/conftest.py) runs each on both


async def test_tells_are_handled_in_order_and_ask_sees_them_all() -> None:
    async with open_system() as system:
        ref = await system.spawn(Recorder, name="rec")
        for i in range(500):
            await ref.tell(Add(i))
        state = await ref.ask(Get())
    assert state["seen"] == list(range(500))
    assert state["total"] == sum(range(500))


async def test_ask_returns_the_handler_value() -> None:
    async with open_system() as system:
        ref = await system.spawn(Recorder, name="rec")
        assert await ref.ask(Add(2)) == 2
        assert await ref.ask(Add(3)) == 5


async def test_handler_error_reaches_the_asker_and_the_actor_carries_on() -> None:
    async with open_system() as system:
        ref = await system.spawn(Recorder, name="rec")
        with pytest.raises(ActorError) as caught:
            await ref.ask(Fail("disk on fire"))
        assert caught.value.type_name == "ValueError"
        assert caught.value.message == "disk on fire"
        assert "raise ValueError(text)" in caught.value.traceback
        assert await ref.ask(Add(1)) == 1


async def test_tell_nowait_raises_mailbox_full_and_tell_waits_for_room() -> None:
    async with open_system() as system:
        ref = await system.spawn(Slow, name="slow", mailbox_size=2)
        sent = 0
        with pytest.raises(MailboxFull):
            for _ in range(10):
                ref.tell_nowait("work")
                sent += 1
        assert sent <= 3  # two queued, perhaps one already taken by the actor
        # tell() does not fail: it waits until the slow actor makes room.
        for _ in range(5):
            await ref.tell("work")
        with anyio.fail_after(10):
            while await ref.ask("count") < sent + 5:
                pass


async def test_ask_times_out() -> None:
    class Silent(Actor):
        async def receive(self, message: Any) -> Any:
            await anyio.sleep_forever()

    async with open_system() as system:
        # stop_timeout: the handler never returns, so the closing system cuts it short
        ref = await system.spawn(Silent, name="silent", stop_timeout=0.2)
        with pytest.raises(AskTimeout):
            await ref.ask("hello", timeout=0.05)


async def test_stopped_actor_is_dead_and_pending_asks_fail() -> None:
    async with open_system() as system:
        ref = await system.spawn(Recorder, name="rec")
        assert await ref.stop() is None
        with pytest.raises(ActorDead):
            await ref.tell(Add(1))
        with pytest.raises(ActorDead):
            await ref.ask(Get())


async def test_on_start_failure_fails_the_spawn() -> None:
    class Broken(Actor):
        async def on_start(self) -> None:
            raise RuntimeError("no config")

    async with open_system() as system:
        with pytest.raises(ActorError, match="no config"):
            await system.spawn(Broken, name="broken")


async def test_closing_the_system_stops_children_before_parents_newest_first() -> None:
    order: list[str] = []

    class Named(Actor):
        def __init__(self, label: str) -> None:
            self.label = label

        async def on_start(self) -> None:
            if self.label == "parent":
                await self.spawn(lambda: Named("child-a"), name="a")
                await self.spawn(lambda: Named("child-b"), name="b")

        async def on_stop(self) -> None:
            order.append(self.label)

    async with open_system() as system:
        await system.spawn(lambda: Named("first"), name="first")
        await system.spawn(lambda: Named("parent"), name="parent")
        await system.spawn(lambda: Named("last"), name="last")
    assert order == ["last", "child-b", "child-a", "parent", "first"]


async def test_a_crash_on_tell_kills_an_unsupervised_actor() -> None:
    class Fragile(Actor):
        async def receive(self, message: Any) -> Any:
            raise KeyError(message)

    async with open_system() as system:
        ref = await system.spawn(Fragile, name="fragile")
        await ref.tell("x")
        reason = await ref.join()
        assert isinstance(reason, KeyError)
        with pytest.raises(ActorDead):
            await ref.tell("y")


async def test_background_task_failure_crashes_the_actor() -> None:
    class WithTask(Actor):
        async def on_start(self) -> None:
            self.start_soon(self.boom)

        async def boom(self) -> None:
            await anyio.sleep(0.01)
            raise OSError("lost the device")

    async with open_system() as system:
        ref = await system.spawn(WithTask, name="task")
        reason = await ref.join()
        assert isinstance(reason, OSError)


async def test_local_and_process_actors_share_a_system() -> None:
    async with open_system() as system:
        ref = await system.spawn(Recorder, name="rec")
        for i in range(10):
            await ref.tell(Add(i))
        state = await ref.ask(Get())
        proc = await system.spawn_process("tests.actors.sample_actors:Recorder", name="proc")
        await proc.tell(Add(5))
        assert (await proc.ask(Get()))["total"] == 5
    assert list(state["seen"]) == list(range(10))


async def test_a_deferred_reply_lets_the_actor_serve_other_asks_meanwhile() -> None:
    class Slowpoke(Actor):
        async def receive(self, message: Any) -> Any:
            if message == "slow":
                reply = self.defer_reply()

                async def later() -> None:
                    await self.release.wait()
                    reply.resolve("slow done")

                self.start_soon(later)
                return "ignored"
            if message == "fail-later":
                reply = self.defer_reply()
                reply.reject(ActorError("ValueError", "nope"))
                return None
            if message == "release":
                self.release.set()
            if isinstance(message, DeferOnTell):
                self.defer_reply().resolve("first")
                self.defer_reply()
            return "quick"

        async def on_start(self) -> None:
            self.release = anyio.Event()

    async with open_system() as system:
        ref = await system.spawn(Slowpoke, name="slow")
        async with anyio.create_task_group() as tg:
            results: list[str] = []
            # Set just before the ask, which puts it in the mailbox before its first wait: once
            # this task runs again, "slow" is ahead of what it asks next. (Not
            # wait_all_tasks_blocked: on asyncio the stall detector's ticker can keep it waiting.)
            asked = anyio.Event()

            async def slow() -> None:
                asked.set()
                results.append(await ref.ask("slow"))

            tg.start_soon(slow)
            await asked.wait()
            assert await ref.ask("other") == "quick"  # not stuck behind the slow one
            await ref.ask("release")
        assert results == ["slow done"]
        with pytest.raises(ActorError, match="nope"):
            await ref.ask("fail-later")
        # deferring twice is refused; the first deferred answer still reaches the asker
        assert await ref.ask(DeferOnTell()) == "first"


async def test_an_answer_later_is_what_the_work_returns_or_raises_and_the_mailbox_goes_on() -> None:
    class Later(Actor):
        async def receive(self, message: Any) -> Any:
            if message == "wait":
                self.answer_later(self.waited())
            elif message == "fail":
                self.answer_later(self.failed())
            elif message == "release":
                self.release.set()
            return "quick"

        async def on_start(self) -> None:
            self.release = anyio.Event()

        async def waited(self) -> str:
            await self.release.wait()
            return "waited"

        async def failed(self) -> str:
            raise ActorError("ValueError", "no good")

    async with open_system() as system:
        ref = await system.spawn(Later, name="later")
        results: list[str] = []
        asked = anyio.Event()  # set just before the ask, which is delivered before its first wait
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                asked.set()
                results.append(await ref.ask("wait"))

            tg.start_soon(wait)
            await asked.wait()
            assert await ref.ask("other") == "quick"  # the mailbox is not held meanwhile
            await ref.ask("release")
        assert results == ["waited"]
        with pytest.raises(ActorError, match="no good"):
            await ref.ask("fail")


class DeferOnTell:
    """A message whose handler defers twice (the second call must fail)."""
