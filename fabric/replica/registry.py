"""The replica table: each replica's API address and host port, when it was last seen, and who
leads now (by the lease row). Replicas on other machines find each other here, and the leader
sends the hosts every host port listed (fabric.cluster.port.Replicas).

A replica registers when it starts and again every little while (which also brings back one
the leader retired while it was paused); it deletes its own row when it stops gracefully, and the
leader deletes, fenced, the rows of replicas not seen for a long time (:func:`retire_unseen`)."""

from __future__ import annotations

from typing import Any

import msgspec

from fabric.controller.pg_store import Database, Fence, check_fence

_REGISTER = """
INSERT INTO fabric_replicas (name, api_url, host_port, seen_at) VALUES (%(name)s, %(url)s, %(port)s, now())
ON CONFLICT (name) DO UPDATE SET api_url = EXCLUDED.api_url, host_port = EXCLUDED.host_port, seen_at = now()
"""

_UNSEEN = """
DELETE FROM fabric_replicas WHERE seen_at < now() - make_interval(secs => %(secs)s) AND name != %(own)s
RETURNING name, host_port
"""

_LEADER = """
SELECT l.holder, l.epoch, l.expires_at > now() AS live, r.api_url
FROM fabric_leases l LEFT JOIN fabric_replicas r ON r.name = l.holder
WHERE l.name = %(lease)s
"""

_REPLICAS = "SELECT name, api_url, host_port FROM fabric_replicas ORDER BY name"

_OPERATION = (
    "SELECT request_id, status, http_status_code, error_code, error_message FROM operations "
    "WHERE request_id = %(id)s"
)


class Leader(msgspec.Struct, frozen=True):
    """Who holds the lease now, and where its API answers."""

    name: str
    epoch: int
    url: str


class Registered(msgspec.Struct, frozen=True):
    """A replica as the table lists it: its API address and host port ("": none)."""

    url: str
    host_port: str


async def register(db: Database, name: str, url: str, host_port: str = "") -> None:
    """Record (or move) a replica's addresses; it was seen now.

    Raises:
        StoreUnavailable: the database did not answer.
    """

    def write(conn: Any) -> None:
        conn.execute(_REGISTER, {"name": name, "url": url, "port": host_port})

    await db.run(write, write=True)


async def unregister(db: Database, name: str) -> None:
    """Take a replica that stops off the list (its own row: no fence needed).

    Raises:
        StoreUnavailable: the database did not answer.
    """

    def write(conn: Any) -> None:
        conn.execute("DELETE FROM fabric_replicas WHERE name = %s", (name,))

    await db.run(write, write=True)


async def retire_unseen(db: Database, fence: Fence, seconds: float) -> dict[str, str]:
    """The leader takes off the list every other replica not seen for ``seconds``, in one
    transaction fenced by its lease; returns their names and host ports.

    Raises:
        Fenced: this replica no longer leads (nothing deleted).
        StoreUnavailable: the database did not answer.
    """

    def write(conn: Any) -> dict[str, str]:
        check_fence(conn, fence)
        rows = conn.execute(_UNSEEN, {"secs": seconds, "own": fence.holder}).fetchall()
        return {r["name"]: r["host_port"] for r in rows}

    return await db.run(write, write=True)


async def current_leader(db: Database, lease: str = "controller") -> Leader | None:
    """The live holder of ``lease`` with its API address (None: no live leader, an election).

    Raises:
        StoreUnavailable: the database did not answer.
    """

    def read(conn: Any) -> Leader | None:
        row = conn.execute(_LEADER, {"lease": lease}).fetchone()
        if row is None or not row["live"] or not row["api_url"]:
            return None
        return Leader(name=row["holder"], epoch=int(row["epoch"]), url=row["api_url"])

    return await db.run(read)


async def replicas(db: Database) -> dict[str, Registered]:
    """Every replica listed, by name.

    Raises:
        StoreUnavailable: the database did not answer.
    """

    def read(conn: Any) -> dict[str, Registered]:
        return {r["name"]: Registered(r["api_url"], r["host_port"]) for r in conn.execute(_REPLICAS)}

    return await db.run(read)


class StoredOperation(msgspec.Struct, frozen=True):
    """An operation as the goal state records it (any pool's)."""

    request_id: str
    status: str
    http_status_code: int
    error_code: str
    error_message: str


async def stored_operation(db: Database, request_id: str) -> StoredOperation | None:
    """An operation of the goal state by request id (None: not there).

    Raises:
        StoreUnavailable: the database did not answer.
    """

    def read(conn: Any) -> StoredOperation | None:
        row = conn.execute(_OPERATION, {"id": request_id}).fetchone()
        return None if row is None else msgspec.convert(row, StoredOperation)

    return await db.run(read)
