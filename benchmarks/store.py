"""Goal-store benchmark: operations per second on SQLite and on PostgreSQL side by side, each
beside a raw driver loop measured in the same run.

    .venv/bin/python benchmarks/store.py [--quick]

Figures:
- put (one OperationRecord upserted, one transaction each) through the store interface
  (SqliteGoalStore inline; PostgresStore in a worker thread, from one task and from 8 at once),
  vs a raw loop of the same upsert (sqlite3 autocommit in WAL mode with synchronous=NORMAL, as
  the store opens it; psycopg on one autocommit connection);
- a transaction of 10 puts (a deployment saved with its instances);
- get (operation by request id) through the interface vs a raw SELECT.
PostgreSQL is a real server started for the run in a temporary folder (initdb + pg_ctl, fsync
on: the durable default), on 127.0.0.1 over TCP.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from fabric.controller.goal_store import GoalStore, SqliteGoalStore  # noqa: E402
from fabric.controller.pg_store import PostgresStore  # noqa: E402
from fabric.controller.store import OperationRecord  # noqa: E402
from tests.pg_server import PostgresServer, missing_reason  # noqa: E402

QUICK = "--quick" in sys.argv
N = 500 if QUICK else 3000
UPSERT_SQLITE = (
    'INSERT OR REPLACE INTO operations ("request_id", "pool", "kind", "target", "status", "http_status_code", '
    '"error_code", "error_message", "description") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'
)


def record(n: int, tag: str) -> OperationRecord:
    return OperationRecord(
        request_id=f"{tag}-{n}", pool="bench", kind="CreateDeployment", target="s/production"
    )


def row(n: int, tag: str) -> tuple[object, ...]:
    return (f"{tag}-{n}", "bench", "CreateDeployment", "s/production", "InProgress", 200, "", "", "")


async def rate(fn: Callable[[int], Awaitable[None]], n: int = N) -> float:
    start = time.perf_counter()
    for i in range(n):
        await fn(i)
    return n / (time.perf_counter() - start)


async def rate_concurrent(fn: Callable[[int], Awaitable[None]], tasks: int, n: int = N) -> float:
    async def worker(k: int) -> None:
        for i in range(k, n, tasks):
            await fn(i)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for k in range(tasks):
            tg.start_soon(worker, k)
    return n / (time.perf_counter() - start)


async def store_figures(store: GoalStore, tag: str) -> dict[str, float]:
    async def put(i: int) -> None:
        await store.put(record(i, f"{tag}p"))

    async def tx10(i: int) -> None:
        async with store.transaction() as tx:
            for j in range(10):
                tx.put(record(i * 10 + j, f"{tag}t"))

    async def get(i: int) -> None:
        assert await store.operation(f"{tag}p-{i}") is not None

    figures = {"put": await rate(put), "tx10": await rate(tx10, N // 5), "get": await rate(get)}
    if isinstance(store, PostgresStore):
        figures["put8"] = await rate_concurrent(lambda i: store.put(record(i, f"{tag}c")), 8)
    return figures


def raw_sqlite(path: Path) -> dict[str, float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    start = time.perf_counter()
    for i in range(N):
        db.execute(UPSERT_SQLITE, row(i, "rawp"))
    put = N / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(N):
        assert db.execute("SELECT * FROM operations WHERE request_id = ?", (f"rawp-{i}",)).fetchone()
    get = N / (time.perf_counter() - start)
    db.close()
    return {"put": put, "get": get}


def raw_psycopg(url: str) -> dict[str, float]:
    import psycopg

    upsert = UPSERT_SQLITE.replace("INSERT OR REPLACE", "INSERT").replace("?", "%s") + (
        ' ON CONFLICT ("request_id") DO UPDATE SET "status" = EXCLUDED."status"'
    )
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for i in range(N):
            conn.execute(upsert, row(i, "rawp"))
        put = N / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(N):
            assert conn.execute("SELECT * FROM operations WHERE request_id = %s", (f"rawp-{i}",)).fetchone()
        get = N / (time.perf_counter() - start)
    return {"put": put, "get": get}


async def main() -> None:
    print(f"goal-store benchmark (trio backend, {os.cpu_count()} cores, {N} operations per figure)")
    with tempfile.TemporaryDirectory() as tmp:
        lite = SqliteGoalStore(Path(tmp) / "fabric.db", "bench")
        sqlite_store = await store_figures(lite, "s")
        await lite.aclose()
        sqlite_raw = raw_sqlite(Path(tmp) / "fabric.db")
    reason = missing_reason()
    if reason:
        print(f"PostgreSQL skipped: {reason}")
        pg_store = pg_raw = None
    else:
        with PostgresServer.start(durable=True) as server:
            url = server.create_database()
            pg = await PostgresStore.open(url, "bench", max_connections=8)
            pg_store = await store_figures(pg, "p")
            await pg.aclose()
            pg_raw = await anyio.to_thread.run_sync(raw_psycopg, url)

    def cell(figures: dict[str, float] | None, key: str, raw: dict[str, float] | None = None) -> str:
        if figures is None or key not in figures:
            return f"{'-':>22}"
        text = f"{figures[key]:>9,.0f}/s"
        if raw is not None and key in raw:
            text += f" ({figures[key] / raw[key]:.2f}x raw)"
        return f"{text:>22}"

    print(f"{'':34}{'SQLite':>22}{'PostgreSQL':>22}")
    print(
        f"{'put, through the store':34}{cell(sqlite_store, 'put', sqlite_raw)}{cell(pg_store, 'put', pg_raw)}"
    )
    print(f"{'put, raw driver loop':34}{cell(sqlite_raw, 'put')}{cell(pg_raw, 'put')}")
    print(
        f"{'put, store, 8 tasks at once':34}{cell(None, 'put8')}{cell(pg_store, 'put8', pg_raw and {'put8': pg_raw['put']})}"
    )
    print(f"{'transaction of 10 puts':34}{cell(sqlite_store, 'tx10')}{cell(pg_store, 'tx10')}")
    print(
        f"{'get, through the store':34}{cell(sqlite_store, 'get', sqlite_raw)}{cell(pg_store, 'get', pg_raw)}"
    )
    print(f"{'get, raw driver loop':34}{cell(sqlite_raw, 'get')}{cell(pg_raw, 'get')}")


if __name__ == "__main__":
    anyio.run(main, backend="trio")
