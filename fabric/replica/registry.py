"""The replica table: each replica's API address, and who leads now (by the lease row)."""

from __future__ import annotations

from typing import Any

import msgspec

from fabric.controller.pg_store import Database

_REGISTER = """
INSERT INTO fabric_replicas (name, api_url, seen_at) VALUES (%(name)s, %(url)s, now())
ON CONFLICT (name) DO UPDATE SET api_url = EXCLUDED.api_url, seen_at = now()
"""

_LEADER = """
SELECT l.holder, l.epoch, l.expires_at > now() AS live, r.api_url
FROM fabric_leases l LEFT JOIN fabric_replicas r ON r.name = l.holder
WHERE l.name = %(lease)s
"""

_REPLICAS = "SELECT name, api_url FROM fabric_replicas ORDER BY name"

_OPERATION = (
    "SELECT request_id, status, http_status_code, error_code, error_message FROM operations "
    "WHERE request_id = %(id)s"
)


class Leader(msgspec.Struct, frozen=True):
    """Who holds the lease now, and where its API answers."""

    name: str
    epoch: int
    url: str


async def register(db: Database, name: str, url: str) -> None:
    """Record (or move) a replica's API address."""

    def write(conn: Any) -> None:
        conn.execute(_REGISTER, {"name": name, "url": url})

    await db.run(write, write=True)


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


async def replicas(db: Database) -> dict[str, str]:
    """Every replica's name and API address."""

    def read(conn: Any) -> dict[str, str]:
        return {r["name"]: r["api_url"] for r in conn.execute(_REPLICAS)}

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
