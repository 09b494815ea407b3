"""The store of a replicated controller against a real PostgreSQL server: a write that finds
the lease taken over is refused and ends the term at once; while the database is away a request
is refused with 503 and background work waits, then lands."""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread
import pytest

from fabric.controller.messages import ControllerError
from fabric.controller.pg_store import Database, Fence, PostgresStore, migrate
from fabric.controller.replica_store import ReplicaStore, fail_fast
from fabric.controller.store import OperationRecord
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.timeout(120)


def record(n: int) -> OperationRecord:
    return OperationRecord(request_id=f"r{n}", pool="local", kind="CreateDeployment")


async def lease(url: str, holder: str, epoch: int) -> None:
    import psycopg

    def write() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO fabric_leases (name, holder, epoch, acquired_at, renewed_at, expires_at) "
                "VALUES ('controller', %s, %s, now(), now(), now() + interval '1 hour') "
                "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = EXCLUDED.epoch",
                (holder, epoch),
            )

    await anyio.to_thread.run_sync(write)


async def test_a_fenced_write_ends_the_term_and_lands_nothing(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    inner = await PostgresStore.open(url, "local", fence=lambda: Fence("controller", "a", 1))
    lost: list[str] = []
    store = ReplicaStore(inner, lost.append)
    try:
        await lease(url, "a", 1)
        await store.put(record(1))  # a leads: it lands
        await lease(url, "b", 2)  # b took over
        with fail_fast(), pytest.raises(ControllerError) as refused:
            await store.put(record(2))
        assert refused.value.status == 503 and "no longer leads" in refused.value.message
        assert len(lost) == 1 and "b at epoch 2" in lost[0]
        # background work (patient) is not retried against a fence: it waits to be cancelled
        with anyio.move_on_after(1.0) as waited:
            await store.put(record(3))
        assert waited.cancelled_caught and len(lost) == 2
        assert await store.operation("r1") is not None
        assert await store.operation("r2") is None and await store.operation("r3") is None
    finally:
        await store.aclose()


async def test_the_database_away_requests_refused_background_work_waits(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    db = Database(url, write_deadline=5.0)
    await db.open()
    await db.run(migrate, write=True)
    store = ReplicaStore(PostgresStore(db, "local"), lambda why: None)
    await store.put(record(0))
    try:
        await anyio.to_thread.run_sync(postgres.stop_server)
        down = True
        try:
            with fail_fast(), pytest.raises(ControllerError) as refused:
                await store.put(record(1))
            assert refused.value.status == 503 and "nothing changed" in refused.value.message
            landed = anyio.Event()

            async def background() -> None:
                await store.put(record(2))  # waits for the database, then lands
                landed.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(background)
                with anyio.fail_after(30):
                    while store.waiting == 0:
                        await anyio.sleep(0.05)
                assert not landed.is_set()
                await anyio.to_thread.run_sync(postgres.start_server)
                down = False
                with anyio.fail_after(60):
                    await landed.wait()
        finally:
            if down:
                await anyio.to_thread.run_sync(postgres.start_server)
        assert await store.operation("r0") is not None and await store.operation("r2") is not None
        assert await store.operation("r1") is None
    finally:
        await store.aclose()


async def test_a_database_outage_is_one_line_when_it_starts_and_one_when_it_ends(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Not psycopg_pool's line per connection attempt (each with libpq's hint on a second line)
    nor a line per retry of each caller."""

    db = Database(postgres.create_database(), name="outage-test")
    await db.open()
    await db.run(migrate, write=True)
    store = ReplicaStore(PostgresStore(db, "local"), lambda why: None)
    try:
        with caplog.at_level(logging.INFO):
            await anyio.to_thread.run_sync(postgres.stop_server)
            down = True
            try:
                landed = anyio.Event()

                async def background() -> None:
                    # fails once the pool's wait ends (it tries to connect meanwhile, several
                    # times), then retries until the database is back
                    await store.put(record(1))
                    landed.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(background)
                    with anyio.fail_after(30):
                        while store.waiting == 0:  # it failed, logged, and waits to retry
                            await anyio.sleep(0.05)
                    await anyio.to_thread.run_sync(postgres.start_server)
                    down = False
                    with anyio.fail_after(60):
                        await landed.wait()
            finally:
                if down:
                    await anyio.to_thread.run_sync(postgres.start_server)
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 2, lines
        assert lines[0].startswith("database unreachable: postgresql://") and lines[0].endswith("; retrying")
        assert lines[1].startswith("database back: postgresql://")
        assert all("\n" not in line for line in lines)
    finally:
        await store.aclose()
