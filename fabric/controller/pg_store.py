"""The goal state in PostgreSQL (``fabric serve --store postgresql://USER@HOST/DB``).

psycopg 3's async API runs on asyncio only, and the fabric runs on trio: every call here is
psycopg's synchronous API in a worker thread (``anyio.to_thread.run_sync``, at most
``max_connections`` at once), on connections from a psycopg_pool pool that checks each one
before lending it (a restarted server leaves dead connections behind).

A transaction's writes are sent in one worker-thread call, as one database transaction. That
call is shielded from the caller's cancellation (with a deadline: PostgreSQL's own
``statement_timeout`` and the pool's wait bound it), so a cancelled caller never leaves a write
half-done; the caller sees its cancellation once the write has landed or failed.

With a ``fence`` (a leader's lease and epoch, see :mod:`fabric.controller.leader`), each write
transaction first reads the lease row ``FOR SHARE`` and writes nothing unless this replica
still holds it with that epoch and the lease has not expired by the database's clock (the
check Temporal makes with a shard's ``range_id``): a leader paused past its lease and resumed
cannot write, its write raises :class:`Fenced`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec

from fabric.controller.goal_store import GoalStore, Writes
from fabric.controller.pg_outage import first_line, watch_pool
from fabric.controller.store import (
    _TABLES,
    DeploymentRecord,
    GenerationRecord,
    HostRecord,
    InstanceRecord,
    OperationRecord,
    PublicPortRecord,
    StoreError,
    _columns,
    _hints,
    _quoted,
    _record,
    _row,
    _table_of,
)

log = logging.getLogger("fabric.controller.store")

#: Bump when a table changes; a database written by a newer fabric is refused.
PG_SCHEMA_VERSION = 4
#: migrations take this transaction-scoped advisory lock (two replicas starting at once); it
#: guards only the schema change, never leadership
_MIGRATION_LOCK = 0x7265_6464_6F67  # "reddog"
#: one statement may run this long (ms) before the server cancels it
STATEMENT_TIMEOUT_MS = 5000
#: waiting for a pooled connection (s)
POOL_TIMEOUT = 5.0
#: a shielded write is waited for this long at most; then the caller gets StoreUnavailable and
#: the write, left to its worker thread, commits or rolls back whole on its own (a leader's
#: fenced write cannot land after its lease expired: the lease row it locks says so)
WRITE_DEADLINE = 10.0

T = TypeVar("T")
R = TypeVar("R", bound=msgspec.Struct)


class StoreUnavailable(StoreError):
    """The database did not answer (down, restarting, unreachable): nothing was written, or,
    for a commit cut off mid-way, the write is in doubt and must be read back.

    ``reported``: the outage was logged already (pg_outage): a caller retrying says so at debug.
    """

    def __init__(self, message: str, *, reported: bool = False) -> None:
        super().__init__(message)
        self.reported = reported


class Fenced(StoreError):
    """This replica's leadership (its epoch) was lost: the write was refused, nothing landed."""


class Fence(msgspec.Struct, frozen=True):
    """The lease a writer must still hold: its name, holder and epoch."""

    lease: str
    holder: str
    epoch: int


def redact(url: str) -> str:
    """The URL without its password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class Database:
    """A psycopg_pool pool and a bounded limiter: ``await db.run(fn, ...)`` calls
    ``fn(connection, ...)`` in a worker thread inside one transaction.

    Args:
        url: a libpq connection URL.
        max_connections: the pool's size and the limiter's tokens.
        name: the pool's name (psycopg logs).
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 4,
        name: str = "fabric",
        write_deadline: float = WRITE_DEADLINE,
    ) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.url = url
        self.where = redact(url)
        self.limiter = anyio.CapacityLimiter(max_connections)
        self.write_deadline = write_deadline
        self.outage = watch_pool(name, f"{self.where} (pool {name})")
        self.pool: Any = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            name=name,
            timeout=POOL_TIMEOUT,
            check=ConnectionPool.check_connection,
            kwargs={
                "connect_timeout": 3,
                # a stalled transaction does not hold its locks (the lease row's) for long
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
                f"-c idle_in_transaction_session_timeout={STATEMENT_TIMEOUT_MS}",
                "row_factory": dict_row,
                "autocommit": True,  # transactions are explicit (conn.transaction())
            },
        )

    async def open(self, timeout: float = 10.0) -> None:
        """Connect (the pool keeps at least one connection).

        Raises:
            StoreUnavailable: no connection within ``timeout``.
        """
        import psycopg

        def first() -> None:  # one plain connection first: its error, at once, not the pool's timeout
            psycopg.connect(self.url, connect_timeout=max(2, int(timeout))).close()

        try:
            await anyio.to_thread.run_sync(first)
        except Exception as exc:
            raise StoreUnavailable(f"{self.where}: cannot connect ({_short(exc)})") from None
        try:
            await anyio.to_thread.run_sync(partial(self.pool.open, wait=True, timeout=timeout))
        except Exception as exc:
            await anyio.to_thread.run_sync(self.pool.close)
            raise StoreUnavailable(f"{self.where}: cannot connect ({_short(exc)})") from None

    async def aclose(self) -> None:
        """Close every connection."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(partial(self.pool.close, timeout=2.0))

    def _call(self, fn: Callable[..., T], *args: Any, transaction: bool = True) -> T:
        import psycopg
        import psycopg_pool

        try:
            with self.pool.connection() as conn:
                if not transaction:  # one statement in autocommit: no BEGIN and COMMIT round trips
                    result = fn(conn, *args)
                else:
                    with conn.transaction():
                        result = fn(conn, *args)
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
            self.outage.failed(_short(exc))
            raise StoreUnavailable(f"{self.where}: {_short(exc)}", reported=True) from None
        self.outage.answered()
        return result

    async def run(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        """``fn(connection, *args)`` in a worker thread: a write in one transaction, a read (one
        statement) in autocommit.

        A write is shielded from the caller's cancellation (up to ``write_deadline``), so it is
        never abandoned half-way; the cancellation is delivered once it ends. Past the deadline
        the caller stops waiting (StoreUnavailable) while the thread's transaction ends whole.

        Raises:
            StoreUnavailable: the database did not answer.
        """
        if not write:
            read = partial(self._call, fn, *args, transaction=False)
            return await anyio.to_thread.run_sync(read, limiter=self.limiter, abandon_on_cancel=True)
        call = partial(self._call, fn, *args)
        result: list[T] = []
        with anyio.move_on_after(self.write_deadline, shield=True):
            # abandon_on_cancel: only the deadline can cancel inside this shield
            result.append(await anyio.to_thread.run_sync(call, limiter=self.limiter, abandon_on_cancel=True))
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not result:
            raise StoreUnavailable(
                f"{self.where}: no answer to a write within {self.write_deadline:g} s (it may have landed)"
            )
        return result[0]


_short = first_line


# -- schema --------------------------------------------------------------------------------------


def _sql_type(hint: Any) -> str:
    if hint is int:
        return "bigint"
    if hint is float:
        return "double precision"
    if hint is bytes:
        return "bytea"
    return "text"  # str, Literal[...], and JSON text for everything nested


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError("bool columns are not stored")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, bytes):
        return "'\\x" + value.hex() + "'::bytea"
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return "'" + text.replace("'", "''") + "'"


def migrate(conn: Any) -> int:
    """Create the tables (or add the columns a record gained); returns the schema version.

    Raises:
        StoreError: the database holds a newer schema than this fabric reads.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    conn.execute("CREATE TABLE IF NOT EXISTS fabric_schema (version integer NOT NULL)")
    row = conn.execute("SELECT max(version) AS v FROM fabric_schema").fetchone()
    version = row["v"] or 0
    if version > PG_SCHEMA_VERSION:
        raise StoreError(
            f"the database holds fabric schema version {version}, this fabric knows up to "
            f"{PG_SCHEMA_VERSION}: upgrade the fabric (reddog) on this machine"
        )
    for table, (kind, key) in _TABLES.items():
        hints = _hints(kind)
        cols = ", ".join(f'"{n}" {_sql_type(hints[n])} NOT NULL' for n in _columns(kind))
        keys = ", ".join(_quoted(key))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({keys}))")
        have = {
            r["column_name"]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "AND table_schema = current_schema()",
                (table,),
            )
        }
        for field in msgspec.structs.fields(kind):
            if field.name not in have and field.default is not msgspec.NODEFAULT:
                conn.execute(
                    f'ALTER TABLE {table} ADD COLUMN "{field.name}" {_sql_type(field.type)} '
                    f"NOT NULL DEFAULT {_literal(field.default)}"
                )
    conn.execute("CREATE INDEX IF NOT EXISTS instances_by_deployment ON instances (deployment_id)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS fabric_leases (name text PRIMARY KEY, holder text NOT NULL, "
        "epoch bigint NOT NULL, acquired_at timestamptz NOT NULL, renewed_at timestamptz NOT NULL, "
        "expires_at timestamptz NOT NULL)"
    )
    # version 2: each replica's API address, where followers forward writes to the leader
    conn.execute(
        "CREATE TABLE IF NOT EXISTS fabric_replicas (name text PRIMARY KEY, api_url text NOT NULL, "
        "seen_at timestamptz NOT NULL)"
    )
    # version 4: each replica's host port (ADDRESS:PORT, "" without --listen), sent to the hosts
    if version < 4:  # (ALTER TABLE locks the table even when the column is there)
        conn.execute(
            "ALTER TABLE fabric_replicas ADD COLUMN IF NOT EXISTS host_port text NOT NULL DEFAULT ''"
        )
    # version 3: what the leader's API last showed (fabric.replica.views), read by followers;
    # RDFE's records of a replicated fabric (fabric.replica.records)
    for extra, column in (("fabric_views", "key"), ("fabric_records", "name")):
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {extra} ({column} text PRIMARY KEY, body bytea NOT NULL, "
            "written_at timestamptz NOT NULL)"
        )
    if version < PG_SCHEMA_VERSION:
        conn.execute("DELETE FROM fabric_schema")
        conn.execute("INSERT INTO fabric_schema (version) VALUES (%s)", (PG_SCHEMA_VERSION,))
    return PG_SCHEMA_VERSION


def check_fence(conn: Any, fence: Fence) -> None:
    """Inside a write transaction: the lease row, locked FOR SHARE until the commit (a takeover
    waits for this transaction, and this one for a takeover), must still be ``fence``'s, live by
    the database's clock.

    Raises:
        Fenced: it is not; the caller's transaction rolls back.
    """
    row = conn.execute(
        "SELECT holder, epoch, expires_at > now() AS live FROM fabric_leases WHERE name = %s FOR SHARE",
        (fence.lease,),
    ).fetchone()
    if row is None or row["holder"] != fence.holder or row["epoch"] != fence.epoch:
        now = "nobody" if row is None else f"{row['holder']} at epoch {row['epoch']}"
        raise Fenced(
            f"{fence.holder} no longer leads {fence.lease} (it held epoch {fence.epoch}; now {now}): "
            "nothing was written"
        )
    if not row["live"]:
        raise Fenced(
            f"{fence.holder}'s lease on {fence.lease} (epoch {fence.epoch}) has expired: nothing was written"
        )


# -- the store -----------------------------------------------------------------------------------


def _upsert_sql(kind: type[msgspec.Struct]) -> str:
    table = _table_of(kind)
    cols = _columns(kind)
    key = _TABLES[table][1]
    names = ", ".join(_quoted(cols))
    marks = ", ".join("%s" for _ in cols)
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in cols if c not in key)
    conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return (
        f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({', '.join(_quoted(key))}) {conflict}"
    )


_UPSERT = {kind: _upsert_sql(kind) for kind, _ in _TABLES.values()}

Statement = tuple[str, Sequence[Any]]


class _PgWrites(Writes):
    """Statements collected for one transaction (sent when the block ends)."""

    def __init__(self) -> None:
        self.statements: list[Statement] = []

    def put(self, record: msgspec.Struct) -> None:
        self.statements.append((_UPSERT[type(record)], _row(record)))

    def delete_host(self, host_id: str) -> None:
        self.statements.append(("DELETE FROM hosts WHERE id = %s", (host_id,)))

    def delete_instance(self, vm: str) -> None:
        self.statements.append(("DELETE FROM instances WHERE vm = %s", (vm,)))
        self.statements.append(("DELETE FROM public_ports WHERE instance = %s", (vm,)))

    def delete_generation(self, deployment_id: str, number: int) -> None:
        self.statements.append(
            ("DELETE FROM generations WHERE deployment_id = %s AND number = %s", (deployment_id, number))
        )

    def delete_deployment(self, deployment_id: str) -> None:
        for table in ("instances", "generations", "public_ports"):
            self.statements.append((f"DELETE FROM {table} WHERE deployment_id = %s", (deployment_id,)))
        self.statements.append(("DELETE FROM deployments WHERE id = %s", (deployment_id,)))


class PostgresStore(GoalStore):
    """A pool's goal state in PostgreSQL; open it with ``await PostgresStore.open(url, pool)``.

    Args:
        db: the connection pool.
        pool: the machine pool.
        fence: returns the lease a write must hold (None: no check, a single fabric).
    """

    def __init__(self, db: Database, pool: str, fence: Callable[[], Fence | None] | None = None) -> None:
        self.db = db
        self.pool = pool
        self.where = db.where
        self.fence: Callable[[], Fence | None] = fence or (lambda: None)

    @classmethod
    async def open(
        cls,
        url: str,
        pool: str,
        *,
        fence: Callable[[], Fence | None] | None = None,
        max_connections: int = 4,
        write_deadline: float = WRITE_DEADLINE,
    ) -> PostgresStore:
        """Connect, and create or migrate the schema.

        Raises:
            StoreUnavailable: no connection.
            StoreError: a schema from a newer fabric.
        """
        # the schema is made or changed once, under the default deadline: a short write
        # deadline is for the goal state's writes, not for a migration on a loaded server
        db = Database(
            url,
            max_connections=max_connections,
            name=f"fabric-{pool}",
            write_deadline=max(write_deadline, WRITE_DEADLINE),
        )
        await db.open()
        try:
            await db.run(migrate, write=True)
        except BaseException:
            await db.aclose()
            raise
        db.write_deadline = write_deadline
        return cls(db, pool, fence)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Writes]:
        writes = _PgWrites()
        yield writes
        if writes.statements:
            await self.db.run(_apply, writes.statements, self.fence(), write=True)

    async def fail_interrupted(self, message: str) -> int:
        def fail(conn: Any, fence: Fence | None) -> int:
            if fence is not None:
                check_fence(conn, fence)
            cursor = conn.execute(
                "UPDATE operations SET status = 'Failed', http_status_code = 500, "
                "error_code = 'InternalError', error_message = %s WHERE status = 'InProgress' AND pool = %s",
                (message, self.pool),
            )
            return int(cursor.rowcount)

        return await self.db.run(fail, self.fence(), write=True)

    async def _select(self, kind: type[R], where: str = "", args: tuple[Any, ...] = ()) -> list[R]:
        table = _table_of(kind)
        hints = _hints(kind)
        order = ", ".join(
            f'"{k}" COLLATE "C"' if _sql_type(hints[k]) == "text" else f'"{k}"' for k in _TABLES[table][1]
        )
        sql = f"SELECT * FROM {table}" + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"

        def select(conn: Any) -> list[R]:
            return [_record(kind, row) for row in conn.execute(sql, args)]

        return await self.db.run(select)

    async def interrupted(self) -> list[OperationRecord]:
        return await self._select(OperationRecord, "status = 'InProgress' AND pool = %s", (self.pool,))

    async def hosts(self) -> list[HostRecord]:
        return await self._select(HostRecord, "pool = %s", (self.pool,))

    async def deployments(self) -> list[DeploymentRecord]:
        return await self._select(DeploymentRecord, "pool = %s", (self.pool,))

    async def generations(self, deployment_id: str) -> list[GenerationRecord]:
        return await self._select(GenerationRecord, "deployment_id = %s", (deployment_id,))

    async def instances(self, deployment_id: str) -> list[InstanceRecord]:
        return await self._select(InstanceRecord, "deployment_id = %s", (deployment_id,))

    async def public_ports(self, deployment_id: str) -> list[PublicPortRecord]:
        return await self._select(PublicPortRecord, "deployment_id = %s", (deployment_id,))

    async def operation(self, request_id: str) -> OperationRecord | None:
        found = await self._select(OperationRecord, "request_id = %s AND pool = %s", (request_id, self.pool))
        return found[0] if found else None

    async def vm_uids(self) -> set[int]:
        def uids(conn: Any) -> set[int]:
            return {r["uid"] for r in conn.execute("SELECT uid FROM instances WHERE uid != 0")}

        return await self.db.run(uids)

    async def other_pools_services(self) -> set[tuple[str, str]]:
        def services(conn: Any) -> set[tuple[str, str]]:
            rows = conn.execute("SELECT service, slot FROM deployments WHERE pool != %s", (self.pool,))
            return {(r["service"], r["slot"]) for r in rows}

        return await self.db.run(services)

    async def aclose(self) -> None:
        await self.db.aclose()


def _apply(conn: Any, statements: list[Statement], fence: Fence | None) -> None:
    if fence is not None:
        check_fence(conn, fence)
    for sql, args in statements:
        conn.execute(sql, args)
