"""The passive health schedule of the pool, on trio's autojump clock: a refusing instance is
retried by one trial connection after 0.25 s, then 0.5, 1, 2, 4, 8 and 10 s at most."""

from __future__ import annotations

import anyio
import pytest
import trio

from fabric.network import Backend, _pool
from fabric.network._pool import Entry, Pool, retry_delay


def pool_of(*names: str) -> Pool:
    pool = Pool(ignore_status=False, probed=False)
    pool.set_backends([Backend(name, "127.0.0.1", 20000 + n) for n, name in enumerate(names)])
    return pool


def picks(pool: Pool, n: int) -> list[str]:
    """The instances of ``n`` connections in a row, each connecting at once."""
    out = []
    for _ in range(n):
        entry = pool.pick(set())
        assert entry is not None
        pool.connected(entry)
        out.append(entry.backend.instance_id)
    return out


def test_the_delay_doubles_from_a_quarter_second_to_ten_seconds() -> None:
    assert [retry_delay(n) for n in range(1, 10)] == [0.25, 0.5, 1, 2, 4, 8, 10, 10, 10]
    assert retry_delay(10_000) == 10


async def test_a_refusing_instance_gets_one_trial_when_its_delay_is_over(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = pool_of("a", "b")
    a = pool.get("a")
    pool.refused(a)
    assert picks(pool, 4) == ["b"] * 4
    for delay in (0.25, 0.5, 1, 2, 4, 8, 10, 10):
        await anyio.sleep(delay - 0.01)
        assert picks(pool, 2) == ["b", "b"], delay
        await anyio.sleep(0.01)
        trial = next(e for e in (pool.pick(set()), pool.pick(set())) if e is a)
        assert trial.trial
        # One trial at a time: while it is under way, every other connection goes elsewhere.
        assert picks(pool, 3) == ["b"] * 3
        pool.refused(trial)
    await anyio.sleep(10)
    trial = next(e for e in (pool.pick(set()), pool.pick(set())) if e is a)
    pool.connected(trial)
    # A success puts it back at once.
    assert sorted(picks(pool, 4)) == ["a", "a", "b", "b"]
    assert pool.stats()[0].refusing is False and pool.stats()[0].refused == 9


async def test_an_abandoned_trial_lets_the_next_connection_try(autojump_clock: trio.abc.Clock) -> None:
    pool = pool_of("a", "b")
    a = pool.get("a")
    pool.refused(a)
    await anyio.sleep(0.25)
    assert _pick_trial(pool, a)
    pool.abandoned(a)
    assert _pick_trial(pool, a)


async def test_when_every_instance_refuses_they_are_tried_anyway(autojump_clock: trio.abc.Clock) -> None:
    pool = pool_of("a", "b")
    a, b = pool.get("a"), pool.get("b")
    pool.refused(a)
    pool.refused(b)
    tried: set[Entry] = set()
    first = pool.pick(tried)
    assert first is not None
    tried.add(first)
    second = pool.pick(tried)
    assert {first, second} == {a, b}
    tried.add(second)
    assert pool.pick(tried) is None


async def test_a_ready_report_or_a_passing_probe_forgives_at_once(autojump_clock: trio.abc.Clock) -> None:
    pool = pool_of("a", "b")
    pool.refused(pool.get("a"))
    pool.update("a", ready=True, busy=None)
    assert sorted(picks(pool, 2)) == ["a", "b"]
    probed = Pool(ignore_status=False, probed=True)
    probed.set_backends([Backend("a", "127.0.0.1", 20000)])
    entry = probed.get("a")
    probed.probe_result(entry, True)
    probed.refused(entry)
    assert probed.stats()[0].refusing and probed.stats()[0].retry_in == 0.25
    probed.probe_result(entry, True)
    assert not probed.stats()[0].refusing and probed.rotation == [entry]


def _pick_trial(pool: Pool, entry: Entry) -> bool:
    for _ in range(len(pool.candidates)):
        if pool.pick(set()) is entry:
            return entry.trial
    return False


async def test_clients_wait_for_an_empty_rotation_within_a_bound(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pool, "MAX_WAITING", 2)
    pool = Pool(ignore_status=False, probed=False)
    pool.set_backends([Backend("a", "127.0.0.1", 20000, ready=False)])
    answers: list[tuple[str, bool]] = []

    async def wait(name: str, timeout: float) -> None:
        answers.append((name, await pool.wait_for_candidates(timeout)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, "gives up", 1.0)
        tg.start_soon(wait, "served", 5.0)
        await anyio.sleep(0.1)
        # A third client finds the queue full: it is turned away at once.
        assert await pool.wait_for_candidates(5.0) is False
        await anyio.sleep(2)
        assert answers == [("gives up", False)]
        pool.update("a", ready=True, busy=None)
    assert answers == [("gives up", False), ("served", True)]
    assert await pool.wait_for_candidates(0) is True
