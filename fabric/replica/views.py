"""What the leader's API shows, kept in the database for the followers (``fabric_views``).

While it leads, a replica writes every ``interval`` what its read API would answer: the
subscriptions and hosted services (RDFE's records), the pools, and every deployment's view with
its instances' last known state. Only rows that changed are written, in one transaction fenced
by the lease (a paused old leader writes none). A follower answers reads from these rows when no
leader answers (fabric.replica.reads), so they are at most ``interval`` plus one write old.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from actors import ActorDead, ActorError, AskTimeout, Ref
from fabric.controller.messages import DeploymentView
from fabric.controller.pg_store import Database, Fence, Fenced, StoreUnavailable, check_fence
from fabric.frontend.ffe import ListAll, ListPools, PoolInfo
from fabric.frontend.store import SubscriptionRecord

log = logging.getLogger("fabric.replica")

SUBSCRIPTIONS = "subscriptions"
POOLS = "pools"
#: a deployment's row: ``deployment/<service>/<slot>``
DEPLOYMENT = "deployment/"
#: how long the leader's FFE may take to list every deployment
LIST_TIMEOUT = 30.0

_UPSERT = (
    "INSERT INTO fabric_views (key, body, written_at) VALUES (%s, %s, now()) "
    "ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body, written_at = now()"
)


def deployment_key(service: str, slot: str) -> str:
    """The row of a deployment's view."""
    return f"{DEPLOYMENT}{service.lower()}/{slot}"


class Stored(msgspec.Struct, frozen=True):
    """One row: its body and when the leader wrote it."""

    body: bytes
    written_at: dt.datetime


async def snapshot(ffe: Ref, rdfe: Any) -> dict[str, bytes]:
    """Every row as the leader's API would answer now (``rdfe``: its RDFE app, None: not yet)."""
    rows: dict[str, bytes] = {}
    pools: list[PoolInfo] = await ffe.ask(ListPools(), timeout=LIST_TIMEOUT)
    rows[POOLS] = msgspec.json.encode(pools)
    every: dict[str, list[DeploymentView]] = await ffe.ask(ListAll(), timeout=LIST_TIMEOUT)
    for views in every.values():
        for view in views:
            rows[deployment_key(view.service, view.slot)] = msgspec.json.encode(view)
    if rdfe is not None:  # after the deployments: a hosted service exists before its deployments
        rows[SUBSCRIPTIONS] = msgspec.json.encode(rdfe.store.subscriptions)
    return rows


def _write(conn: Any, changed: dict[str, bytes], keep: list[str], fence: Fence) -> None:
    check_fence(conn, fence)
    for key, body in changed.items():
        conn.execute(_UPSERT, (key, body))
    conn.execute("DELETE FROM fabric_views WHERE NOT (key = ANY(%s))", (keep,))


async def publish(
    db: Database,
    ffe: Ref,
    rdfe: Callable[[], Any],
    fence: Callable[[], Fence],
    on_fenced: Callable[[str], None],
    interval: float,
) -> None:
    """Write the rows that changed every ``interval`` until cancelled (a leader's term)."""
    written: dict[str, bytes] | None = None  # the first round writes every row, drops the rest
    while True:
        try:
            rows = await snapshot(ffe, rdfe())
        except (ActorError, ActorDead, AskTimeout) as exc:
            log.warning("views for the followers not read: %s", exc)
            rows = None
        if rows is not None and rows != written:
            before = written or {}
            changed = {k: v for k, v in rows.items() if before.get(k) != v}
            try:
                await db.run(_write, changed, sorted(rows), fence(), write=True)
                written = rows
            except Fenced as exc:
                on_fenced(str(exc))
                return
            except StoreUnavailable as exc:
                level = logging.DEBUG if exc.reported else logging.WARNING  # pg_outage told it
                log.log(level, "views for the followers not written: %s", exc)
        await anyio.sleep(interval)


async def read_rows(db: Database, keys: list[str], prefix: str | None = None) -> dict[str, Stored]:
    """The rows named, and those whose key starts with ``prefix``.

    Raises:
        StoreUnavailable: the database did not answer.
    """

    def read(conn: Any) -> dict[str, Stored]:
        sql = "SELECT key, body, written_at FROM fabric_views WHERE key = ANY(%s)"
        args: tuple[Any, ...] = (keys,)
        if prefix is not None:
            sql += " OR starts_with(key, %s)"
            args += (prefix,)
        return {r["key"]: Stored(bytes(r["body"]), r["written_at"]) for r in conn.execute(sql, args)}

    return await db.run(read)


def subscriptions_of(row: Stored) -> list[SubscriptionRecord]:
    """The subscriptions row's records."""
    return msgspec.json.decode(row.body, type=list[SubscriptionRecord])


def pools_of(row: Stored) -> list[PoolInfo]:
    """The pools row's records."""
    return msgspec.json.decode(row.body, type=list[PoolInfo])


def view_of(row: Stored) -> DeploymentView:
    """A deployment row's view."""
    return msgspec.json.decode(row.body, type=DeploymentView)
