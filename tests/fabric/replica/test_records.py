"""RDFE's records of a replicated fabric in a real PostgreSQL database: taken from the folder's
rdfe.json the first time, saved fenced by the lease (a replica that lost it changes nothing)."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
import pytest

from fabric.controller.pg_store import Database, Fence, migrate
from fabric.frontend.api import ApiError
from fabric.frontend.store import HostedServiceRecord, Store
from fabric.replica.records import open_records
from tests.fabric.controller.test_replica_store import lease
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.timeout(60)


async def test_records_come_from_the_folder_once_and_are_saved_fenced(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database()
    folder = Store(tmp_path)  # a fabric that ran here before: its rdfe.json
    [sub] = folder.subscriptions
    db = Database(url)
    await db.open()
    try:
        await db.run(migrate, write=True)
        await lease(url, "a", 1)
        lost: list[str] = []
        records = await open_records(db, lambda: Fence("controller", "a", 1), lost.append, tmp_path)
        assert [s.id for s in records.subscriptions] == [sub.id]
        records.subscriptions[0].hosted_services["kept"] = HostedServiceRecord(name="kept")
        await anyio.to_thread.run_sync(records.save)
        await lease(url, "b", 2)  # b took over: a's save is refused, nothing changes
        records.subscriptions[0].hosted_services["lost"] = HostedServiceRecord(name="lost")
        with pytest.raises(ApiError) as refused:
            await anyio.to_thread.run_sync(records.save)
        assert refused.value.status == 503 and len(lost) == 1 and "b at epoch 2" in lost[0]
        again = await open_records(db, lambda: Fence("controller", "b", 2), lost.append, tmp_path)
        assert set(again.subscriptions[0].hosted_services) == {"kept"}
        assert "kept" not in (tmp_path / "rdfe.json").read_text()  # the database is the record
    finally:
        await db.aclose()
