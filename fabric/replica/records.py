"""RDFE's records (subscriptions, hosted services) of a replicated fabric, in the database.

A single fabric keeps them in ``<state>/rdfe.json``. A leading replica keeps them in the
``fabric_records`` table instead, each save one transaction fenced by its lease like every goal
state write: a leader paused past its lease and resumed cannot acknowledge a hosted service the
next leader never sees (its save is refused, 503, nothing changed). The first leader on a
database takes the folder's ``rdfe.json`` as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.from_thread
import anyio.to_thread
import msgspec

from fabric.controller.pg_store import Database, Fence, Fenced, StoreUnavailable, check_fence
from fabric.frontend.api import ApiError
from fabric.frontend.store import STORE_FILE, Store, SubscriptionRecord, _State

#: the row RDFE's records are kept in
ROW = "rdfe"

_UPSERT = (
    "INSERT INTO fabric_records (name, body, written_at) VALUES (%s, %s, now()) "
    "ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body, written_at = now()"
)


class FencedRecords(Store):
    """RDFE's store, read from and saved to the database (construct it in a worker thread:
    ``await open_records(...)``).

    Args:
        state_dir: the shared state folder (its ``rdfe.json`` is read once, when the database
            has no records yet).
        db: the replica's database pool.
        fence: the lease a save must hold.
        on_fenced: called (in the event loop) when a save found the lease lost.
    """

    def __init__(
        self, state_dir: Path, db: Database, fence: Callable[[], Fence], on_fenced: Callable[[str], None]
    ) -> None:
        self.path = Path(state_dir) / STORE_FILE
        self._db, self._fence, self._on_fenced = db, fence, on_fenced
        row = self._call(_read)
        self._state = msgspec.json.decode(row, type=_State) if row is not None else self._load()
        if row is None or not self._state.subscriptions:
            if not self._state.subscriptions:
                sub = SubscriptionRecord(id=_new_id(), name="Local subscription")
                self._state.subscriptions[sub.id] = sub
            self.save()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return self._db._call(fn, *args)
        except Fenced as exc:
            anyio.from_thread.run_sync(self._on_fenced, str(exc))
            raise ApiError(
                503, "ServiceUnavailable", "this replica no longer leads; nothing changed, try again"
            ) from None
        except StoreUnavailable as exc:
            raise ApiError(
                503, "ServiceUnavailable", f"the database did not answer ({exc}); nothing changed, try again"
            ) from None

    def save(self) -> None:
        """Commit every record to the database, fenced (in a worker thread).

        Raises:
            ApiError: 503 when the lease was lost or the database did not answer.
        """
        self._call(_write, msgspec.json.encode(self._state), self._fence())


def _read(conn: Any) -> bytes | None:
    row = conn.execute("SELECT body FROM fabric_records WHERE name = %s", (ROW,)).fetchone()
    return None if row is None else bytes(row["body"])


def _write(conn: Any, body: bytes, fence: Fence) -> None:
    check_fence(conn, fence)
    conn.execute(_UPSERT, (ROW, body))


def _new_id() -> str:
    import uuid

    return str(uuid.uuid4())


async def open_records(
    db: Database, fence: Callable[[], Fence], on_fenced: Callable[[str], None], state_dir: Path
) -> FencedRecords:
    """RDFE's records of a leading replica, loaded from the database.

    Raises:
        ApiError: 503 when the database did not answer or the lease was lost.
    """
    return await anyio.to_thread.run_sync(FencedRecords, state_dir, db, fence, on_fenced)
