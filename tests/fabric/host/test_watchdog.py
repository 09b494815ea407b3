"""The heartbeat watchdog at full length (2.5 s heartbeats, 10 minutes of silence) on trio's
autojump clock, with in-process stand-ins for the guest."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import anyio
import pytest
import trio

from actors import Actor, open_system
from fabric.guest.messages import Heartbeat, HeartbeatReply, InstanceStatus
from fabric.host.watchdog import UNKNOWN_AFTER, HeartbeatWatchdog
from fabric.settings import Settings

pytestmark = pytest.mark.timeout(20)

AZURE = Settings()


class Guest(Actor):
    """Answers each heartbeat after ``delay`` seconds, unless muted."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.unmuted = anyio.Event()
        self.unmuted.set()
        self.answered: list[float] = []

    def mute(self, muted: bool) -> None:
        """Hang (every heartbeat waits) or come back."""
        if muted and self.unmuted.is_set():
            self.unmuted = anyio.Event()
        elif not muted:
            self.unmuted.set()

    async def receive(self, message: Any) -> Any:
        assert isinstance(message, Heartbeat)
        await self.unmuted.wait()
        await anyio.sleep(self.delay)
        self.answered.append(anyio.current_time())
        return HeartbeatReply(
            seq=message.seq, instance_id="W_IN_0", status=InstanceStatus(status="ReadyRole")
        )


class Calls:
    """What the watchdog reported, with times."""

    def __init__(self) -> None:
        self.replies: list[float] = []
        self.unknown: list[tuple[float, float]] = []

    async def on_reply(self, reply: HeartbeatReply) -> None:
        self.replies.append(anyio.current_time())

    async def on_unknown(self, silent: float) -> None:
        self.unknown.append((anyio.current_time(), silent))


async def test_the_defaults_are_the_seeds() -> None:
    assert AZURE.guest_heartbeat_interval == 2.5
    assert AZURE.guest_heartbeat_timeout == 600.0


async def test_a_guest_answering_every_heartbeat_is_never_condemned(autojump_clock: trio.abc.Clock) -> None:
    guest, calls = Guest(), Calls()
    async with open_system() as system:
        ref = await system.spawn(lambda: guest, name="guest")
        start = anyio.current_time()
        with anyio.move_on_after(3 * 3600) as scope:
            await HeartbeatWatchdog(ref, AZURE).run(calls.on_reply, calls.on_unknown)
        await ref.stop()
    assert scope.cancelled_caught  # three hours and still watching
    assert calls.unknown == []
    # one heartbeat every 2.5 s, on a fixed cadence
    assert len(calls.replies) == pytest.approx(3 * 3600 / 2.5, abs=1)
    gaps = {round(b - a, 6) for a, b in pairwise(calls.replies)}
    assert gaps == {2.5}
    assert calls.replies[0] == pytest.approx(start)


async def test_a_silent_guest_is_condemned_after_ten_minutes_not_before(
    autojump_clock: trio.abc.Clock,
) -> None:
    guest, calls = Guest(), Calls()
    async with open_system() as system:
        ref = await system.spawn(lambda: guest, name="guest")
        dog = HeartbeatWatchdog(ref, AZURE)

        async def mute_later() -> None:
            await anyio.sleep(100)
            guest.mute(True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(mute_later)
            silent = await dog.run(calls.on_reply, calls.on_unknown)
            condemned = anyio.current_time()
            tg.cancel_scope.cancel()
        guest.mute(False)
        await ref.stop()
    last_reply = calls.replies[-1]
    assert 600.0 <= silent < 600.0 + 2.5
    assert condemned - last_reply == pytest.approx(silent)
    assert 600.0 <= condemned - last_reply < 602.5
    # unknown once, when the UNKNOWN_AFTER-th heartbeat of the silence timed out (the first was
    # sent one interval after the last reply), long before the restart
    assert len(calls.unknown) == 1
    unknown_at, unknown_silence = calls.unknown[0]
    assert unknown_silence == pytest.approx((UNKNOWN_AFTER + 1) * 2.5)
    assert unknown_at - last_reply == pytest.approx(unknown_silence)


async def test_a_late_reply_is_a_missed_one(autojump_clock: trio.abc.Clock) -> None:
    guest, calls = Guest(delay=3.0), Calls()  # always answers, always after the 2.5 s it has
    async with open_system() as system:
        ref = await system.spawn(lambda: guest, name="guest")
        start = anyio.current_time()
        silent = await HeartbeatWatchdog(ref, AZURE).run(calls.on_reply, calls.on_unknown)
        elapsed = anyio.current_time() - start
        await ref.stop()
    assert calls.replies == []
    assert len(guest.answered) > 100  # it did answer, late every time
    assert silent == pytest.approx(elapsed)
    assert 600.0 <= silent < 602.5


async def test_one_reply_in_time_restarts_the_ten_minutes(autojump_clock: trio.abc.Clock) -> None:
    guest, calls = Guest(), Calls()
    async with open_system() as system:
        ref = await system.spawn(lambda: guest, name="guest")

        async def flaky() -> None:
            # silent 595 s, answers for one heartbeat, silent again: three times over
            for _ in range(3):
                guest.mute(True)
                await anyio.sleep(595)
                guest.mute(False)
                await anyio.sleep(2.5)

        with anyio.move_on_after(3 * 597.5 + 60) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(flaky)
                await HeartbeatWatchdog(ref, AZURE).run(calls.on_reply, calls.on_unknown)
        await ref.stop()
    assert scope.cancelled_caught  # never condemned
    assert len(calls.unknown) == 3  # but unknown during each silence


async def test_guests_booted_apart_are_heartbeaten_together(autojump_clock: trio.abc.Clock) -> None:
    # A host with many guests wakes once per interval for all of them, not once per guest: each
    # gets its first heartbeat at once, then all share one cadence.
    guests = [Guest(), Guest(), Guest()]
    async with open_system() as system:
        refs = [await system.spawn(lambda g=g: g, name=f"guest{i}") for i, g in enumerate(guests)]  # type: ignore[misc]
        async with anyio.create_task_group() as tg:
            for offset, ref in zip((0.3, 1.1, 2.2), refs, strict=True):
                await anyio.sleep(offset)
                tg.start_soon(HeartbeatWatchdog(ref, AZURE).run, Calls().on_reply, Calls().on_unknown)
            await anyio.sleep(60)
            tg.cancel_scope.cancel()
        for ref in refs:
            await ref.stop()
    firsts = [g.answered[0] for g in guests]
    assert firsts == pytest.approx([0.3, 1.4, 3.6])  # the first heartbeat at once
    later = [{round(t, 6) for t in g.answered if 5 <= t <= 60} for g in guests]
    assert later[0] == later[1] == later[2] == {5 + 2.5 * k for k in range(23)}  # then together
    for g in guests:
        assert {round(b - a, 6) for a, b in pairwise(g.answered[1:])} == {2.5}  # the cadence holds
