"""Periodic work riding on the event loop's other wakeups (actors/_wake.py), on trio's autojump
clock: a link ping is sent when its process is awake anyway, and on time when it stays asleep."""

from __future__ import annotations

import anyio
import pytest
import trio

from actors._wake import wake_between

pytestmark = pytest.mark.timeout(10)


async def test_a_wait_ends_at_the_first_other_wakeup_after_its_earliest_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    start = anyio.current_time()
    woke: list[float] = []

    async def other_work() -> None:
        for at in (1.0, 3.0, 4.0):  # a message arrives at 1 s (too soon), 3 s and 4 s
            await anyio.sleep_until(start + at)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_work)
        await wake_between(2.5, 5.0)
        woke.append(anyio.current_time() - start)
    assert woke == [pytest.approx(3.0)]  # rode on the wakeup at 3 s, not its own at 5 s


async def test_a_wait_in_an_idle_loop_ends_at_its_latest_time(autojump_clock: trio.abc.Clock) -> None:
    start = anyio.current_time()
    await wake_between(2.5, 5.0)
    assert anyio.current_time() - start == pytest.approx(5.0)
    # and again, with the first waiter's entry gone
    await wake_between(1.0, 2.0)
    assert anyio.current_time() - start == pytest.approx(7.0)
