"""Leader election against a real PostgreSQL server: one of two electors wins; a leader paused
(SIGSTOP) past its lease is replaced with a higher epoch and, resumed, can write nothing
(fencing) and sees it lost; the database restarted: the leader stops acting before its lease
can expire, carries on when the database is back, and no acknowledged write is lost."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import anyio.abc
import anyio.to_thread
import psycopg
import pytest

from fabric.controller.leader import Elector
from fabric.controller.pg_store import Database, Fenced, PostgresStore, StoreUnavailable
from fabric.controller.store import OperationRecord
from tests.paths import ROOT
from tests.pg_server import PostgresServer

#: lease, renew interval, renew deadline: the fast profile's shape, shorter
DURATION, INTERVAL, DEADLINE = 1.5, 0.2, 1.0


#: each running elector's cancel scope (cancel it to make that elector leave)
running: dict[Elector, anyio.CancelScope] = {}


@asynccontextmanager
async def elector(url: str, name: str) -> AsyncIterator[Elector]:
    db = Database(url, name=name)
    await db.open()
    e = Elector(db, name, duration=DURATION, renew_interval=INTERVAL, renew_deadline=DEADLINE)

    async def run(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            running[e] = scope
            await e.run(task_status=task_status)

    try:
        async with anyio.create_task_group() as tg:
            await tg.start(run)
            yield e
            tg.cancel_scope.cancel()
    finally:
        running.pop(e, None)
        await db.aclose()


async def test_of_two_electors_one_leads_and_the_other_takes_over_when_it_leaves(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database()
    with anyio.fail_after(15):
        async with elector(url, "a") as a, elector(url, "b") as b:
            while not (a.is_leader or b.is_leader):
                await anyio.sleep(0.01)
            winner, loser = (a, b) if a.is_leader else (b, a)
            await anyio.sleep(DURATION + INTERVAL)  # the other tries several times meanwhile
            assert winner.is_leader and not loser.is_leader
            assert winner.term is not None and winner.term.epoch == 1
            assert winner.fence().epoch == 1 and loser.fence().epoch == 0
            # The winner leaves (it releases its lease): the other takes over at its next try,
            # without waiting for the lease to expire.
            left = anyio.current_time()
            winner_run = running[winner]
            winner_run.cancel()
            term = await loser.wait_leading()
            assert term.epoch == 2 and anyio.current_time() - left < DURATION - INTERVAL - 0.3
            assert not winner.is_leader


async def test_a_follower_cannot_write_with_the_leaders_fence(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    with anyio.fail_after(15):
        async with elector(url, "a") as a, elector(url, "b") as b:
            while not (a.is_leader or b.is_leader):
                await anyio.sleep(0.01)
            won, lost = (a, b) if a.is_leader else (b, a)
            leader = await PostgresStore.open(url, "local", fence=won.fence)
            follower = await PostgresStore.open(url, "local", fence=lost.fence)
            try:
                await leader.put(OperationRecord(request_id="ok", pool="local", kind="k"))
                refusal = f"{lost.holder} no longer leads controller \\(it held epoch 0; now {won.holder} at epoch 1\\)"
                with pytest.raises(Fenced, match=refusal):
                    await follower.put(OperationRecord(request_id="no", pool="local", kind="k"))
                assert await leader.operation("ok") is not None and await leader.operation("no") is None
            finally:
                await leader.aclose()
                await follower.aclose()


class Child:
    """A leader_child process and its output lines."""

    def __init__(self, url: str, name: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fabric.controller.leader_child", url, name,
             str(DURATION), str(INTERVAL), str(DEADLINE)],
            cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.lines: list[str] = []

    def wait_for(self, prefix: str, timeout: float) -> str:
        """Read lines until one starts with ``prefix``; returns it."""
        end = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < end:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, end - time.monotonic()))
            if ready:
                line = self.proc.stdout.readline().strip()
                if not line:
                    break
                self.lines.append(line)
                if line.startswith(prefix):
                    return line
        raise AssertionError(f"no {prefix!r} line within {timeout} s; saw {self.lines[-5:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)


@contextmanager
def children(url: str, *names: str) -> Iterator[list[Child]]:
    made: list[Child] = []
    try:
        for name in names:
            made.append(Child(url, name))
        yield made
    finally:
        for child in made:
            child.stop()


def _rows(url: str, holder: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT kind, count(*) FROM operations WHERE request_id LIKE %s GROUP BY kind", (f"{holder}-%",)
        ).fetchall()
    return {kind: n for kind, n in rows}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_leader_paused_past_its_lease_is_replaced_and_resumed_writes_nothing(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database()
    with children(url, "a") as [a]:
        assert a.wait_for("leading", 15) == "leading 1"
        a.wait_for("wrote", 5)
        with children(url, "b") as [b]:
            os.kill(a.proc.pid, signal.SIGSTOP)
            paused = time.monotonic()
            assert b.wait_for("leading", DURATION + 10) == "leading 2"
            took = time.monotonic() - paused
            assert took >= DURATION - 0.3, (
                f"b took over {took:.2f} s after the pause, before a's lease ran out"
            )
            b.wait_for("wrote", 5)
            before = _rows(url, "a")
            assert set(before) == {"epoch1"}
            os.kill(a.proc.pid, signal.SIGCONT)
            lost = a.wait_for("lost", 5)
            assert lost.startswith("lost 1 ")
            a.wait_for("fenced", 5)
            for _ in range(5):
                a.wait_for("fenced", 5)  # it keeps trying with epoch 1, and keeps being refused
            assert not [line for line in a.lines[a.lines.index(lost) :] if line.startswith("wrote")]
            assert _rows(url, "a") == before, "the old leader wrote after it was replaced"
            assert _rows(url, "b").keys() == {"epoch2"}


async def test_the_database_restarted_the_leader_stops_acting_in_time_and_carries_on(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database()
    acked: list[str] = []
    terms: list[tuple[int, str | None, float]] = []
    demoted: list[float] = []
    with anyio.fail_after(40):
        async with elector(url, "a") as a:
            # a write is waited for no longer than the lease outlives the renew deadline
            store = await PostgresStore.open(
                url, "local", fence=a.fence, write_deadline=(DURATION - DEADLINE) / 2
            )

            async def act() -> None:
                """Write as leader while leading; note how each term ended."""
                n = 0
                while True:
                    async with a.leading() as term:
                        while True:
                            n += 1
                            rid = f"w{n}"
                            try:
                                await store.put(
                                    OperationRecord(request_id=rid, pool="local", kind=f"epoch{term.epoch}")
                                )
                                acked.append(rid)
                            except (StoreUnavailable, Fenced):
                                pass
                            await anyio.sleep(0.02)
                    terms.append((term.epoch, term.lost, anyio.current_time()))
                    assert term.ended_at is not None
                    demoted.append(term.ended_at)

            async with anyio.create_task_group() as tg:
                tg.start_soon(act)
                await a.wait_leading()
                while len(acked) < 10:
                    await anyio.sleep(0.02)
                await anyio.to_thread.run_sync(postgres.stop_server)
                stopped = anyio.current_time()
                renewed = a.renewed_at
                assert renewed is not None
                while not terms:
                    await anyio.sleep(0.02)
                epoch, why, ended = terms[0]
                assert epoch == 1 and why == f"no renewal for {DEADLINE:g} s"
                # It gave up when the deadline passed, and its acting (a write in flight
                # included) ended before the lease could expire.
                assert demoted[0] - renewed <= DEADLINE + 0.2 and demoted[0] - stopped <= DEADLINE + 0.2
                assert ended - renewed < DURATION, f"acted {ended - renewed:.2f} s past its last renewal"
                count = len(acked)
                await anyio.to_thread.run_sync(postgres.start_server)
                term = await a.wait_leading()
                assert term.epoch == 2
                while len(acked) < count + 10:
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
            try:
                with psycopg.connect(url) as conn:
                    stored = {r[0] for r in conn.execute("SELECT request_id FROM operations")}
                assert set(acked) <= stored, f"acknowledged writes lost: {sorted(set(acked) - stored)}"
            finally:
                await store.aclose()
