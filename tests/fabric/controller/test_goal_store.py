"""The goal-store interface on both implementations (SQLite and a real PostgreSQL server):
records round trip, transactions, pools, deletes, schema versions, and cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from fabric.controller.goal_store import GoalStore, StoreUrlError, check_store_url, open_goal_store
from fabric.controller.store import (
    DeploymentRecord,
    GenerationRecord,
    HostRecord,
    InstanceRecord,
    OperationRecord,
    PublicPortRecord,
    StoreError,
    UpgradeRecord,
)
from tests.pg_server import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None (SQLite in the state folder) or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
async def store(store_url: str | None, tmp_path: Path) -> AsyncIterator[GoalStore]:
    s = await open_goal_store(store_url, tmp_path, "east")
    yield s
    await s.aclose()


def _records() -> list[object]:
    upgrade = UpgradeRecord(
        kind="package", mode="Manual", generation=2, role="Web", next_domain=1, domain_count=3
    )
    return [
        DeploymentRecord(
            id="d1", pool="east", service="shop", slot="staging", name="v1", label="first",
            goal="Suspended", generation=2, upgrade=upgrade, folder="/x",
        ),
        GenerationRecord(
            deployment_id="d1", number=2, packages={"Web": "/x/pkg2"}, main="/x/pkg2",
            configuration=b"\x00<xml/>\xff", configuration_name="c.cscfg",
        ),
        InstanceRecord(
            vm="shop.v1.Web_IN_0", deployment_id="d1", role="Web", index=0, host_id="east-host1",
            ports={"Http": 4100, "Gossip": 4101}, update_domain=0, fault_domain=1, generation=2, uid=61234,
        ),
        PublicPortRecord(deployment_id="d1", role="Web", endpoint="Http", requested=80, port=8080),
        HostRecord(id="east-host1", pool="east", number=1, cores=8, fault_domain=0),
        OperationRecord(request_id="r1", pool="east", kind="CreateDeployment", target="shop/staging"),
    ]  # fmt: skip


async def test_every_record_round_trips_and_survives_a_reopen(store_url: str | None, tmp_path: Path) -> None:
    dep, gen, inst, port, host, op = _records()
    store = await open_goal_store(store_url, tmp_path, "east")
    for record in (dep, gen, inst, port, host, op):
        await store.put(record)  # type: ignore[arg-type]
    await store.put(inst)  # type: ignore[arg-type]  # a second put replaces
    await store.aclose()

    again = await open_goal_store(store_url, tmp_path, "east")
    try:
        assert await again.deployments() == [dep]
        assert await again.generations("d1") == [gen]
        assert await again.instances("d1") == [inst]
        assert await again.public_ports("d1") == [port]
        assert await again.hosts() == [host]
        assert await again.operation("r1") == op
        assert await again.operation("nope") is None
        assert await again.vm_uids() == {61234}
    finally:
        await again.aclose()


async def test_a_failed_transaction_leaves_nothing(store: GoalStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            tx.put(HostRecord(id="h", pool="east", number=1, cores=2, fault_domain=0))
            tx.put(DeploymentRecord(id="d", pool="east", service="s", slot="production", name="n"))
            raise RuntimeError("half way")
    assert await store.hosts() == [] and await store.deployments() == []


async def test_pools_see_only_their_own_records(store_url: str | None, tmp_path: Path) -> None:
    a = await open_goal_store(store_url, tmp_path, "a")
    b = await open_goal_store(store_url, tmp_path, "b")
    try:
        await a.put(DeploymentRecord(id="1", pool="a", service="s", slot="production", name="n"))
        await a.put(OperationRecord(request_id="r", pool="a", kind="k"))
        assert await b.deployments() == [] and await b.operation("r") is None
        assert await b.other_pools_services() == {("s", "production")}
    finally:
        await a.aclose()
        await b.aclose()


async def test_interrupted_operations_read_failed(store: GoalStore) -> None:
    await store.put(OperationRecord(request_id="r1", pool="east", kind="k"))
    await store.put(OperationRecord(request_id="r2", pool="east", kind="k", status="Succeeded"))
    assert await store.fail_interrupted("restarted") == 1
    failed = await store.operation("r1")
    assert failed is not None and failed.status == "Failed" and failed.error_message == "restarted"
    assert failed.http_status_code == 500 and failed.error_code == "InternalError"
    assert (await store.operation("r2")).status == "Succeeded"  # type: ignore[union-attr]


async def test_deletes_take_their_rows(store: GoalStore) -> None:
    dep, gen, inst, port, host, _ = _records()
    async with store.transaction() as tx:
        for record in (dep, gen, inst, port, host):
            tx.put(record)  # type: ignore[arg-type]
        tx.put(
            PublicPortRecord(
                deployment_id="d1", role="Web", endpoint="Rdp", instance=inst.vm, requested=3389, port=40000
            )
        )  # type: ignore[attr-defined]
    await store.delete_instance("shop.v1.Web_IN_0")
    assert await store.instances("d1") == [] and await store.public_ports("d1") == [port]
    await store.delete_generation("d1", 2)
    await store.delete_host("east-host1")
    assert await store.generations("d1") == [] and await store.hosts() == []
    await store.delete_deployment("d1")
    assert await store.deployments() == [] and await store.public_ports("d1") == []


async def test_a_write_whose_caller_is_cancelled_lands_whole(store: GoalStore) -> None:
    """Cancelled while its transaction commits, a write is not abandoned half-way."""
    with anyio.CancelScope() as scope:
        async with store.transaction() as tx:
            for n in range(200):
                tx.put(OperationRecord(request_id=f"r{n:03}", pool="east", kind="k"))
            scope.cancel()  # the commit happens at the block's end, under this cancellation
    assert scope.cancelled_caught or scope.cancel_called
    landed = [await store.operation(f"r{n:03}") for n in (0, 199)]
    assert all(r is not None for r in landed)


async def test_postgresql_refuses_a_schema_from_the_future(postgres: PostgresServer, tmp_path: Path) -> None:
    import psycopg

    url = postgres.create_database()
    store = await open_goal_store(url, tmp_path, "east")
    await store.aclose()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE fabric_schema SET version = 99")
    from fabric.controller.pg_store import PG_SCHEMA_VERSION

    with pytest.raises(StoreError, match=rf"schema version 99, this fabric knows up to {PG_SCHEMA_VERSION}:"):
        await open_goal_store(url, tmp_path, "east")


async def test_postgresql_migrates_under_the_default_deadline_whatever_the_write_deadline(
    postgres: PostgresServer,
) -> None:
    from fabric.controller.pg_store import PostgresStore

    # a write deadline shorter than any migration (a test's, or a tight lease's): the schema is
    # still made, and the store's writes keep the short deadline
    store = await PostgresStore.open(postgres.create_database(), "east", write_deadline=0.001)
    try:
        assert store.db.write_deadline == 0.001
    finally:
        await store.aclose()


async def test_postgresql_migrates_an_older_table_by_adding_columns(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    import psycopg

    url = postgres.create_database()
    await (await open_goal_store(url, tmp_path, "east")).aclose()
    with psycopg.connect(url, autocommit=True) as conn:  # as if written before InstanceRecord.boot existed
        conn.execute('ALTER TABLE instances DROP COLUMN "boot"')
    store = await open_goal_store(url, tmp_path, "east")
    try:
        await store.put(InstanceRecord(vm="v", deployment_id="d", role="R", index=0, boot="b1"))
        assert [i.boot for i in await store.instances("d")] == ["b1"]
    finally:
        await store.aclose()


async def test_an_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        await open_goal_store("postgresql://nobody@127.0.0.1:1/none", tmp_path, "east")


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/db", "postgresql://u@h", "postgresql://u@h:port/db", "postgresql:///db", "fabric.db"],
)
def test_a_bad_store_url_is_one_line_naming_the_form(url: str) -> None:
    with pytest.raises(StoreUrlError) as caught:
        check_store_url(url)
    assert "\n" not in str(caught.value) and url in str(caught.value)


def test_a_good_store_url_passes() -> None:
    for url in ("postgresql://fabric@127.0.0.1:5432/fabric", "postgres://u@db.example/x?sslmode=require"):
        assert check_store_url(url) == url


def test_fabric_serve_refuses_a_bad_store_url_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fabric.commands.run import serve

    result = CliRunner().invoke(serve, ["--store", "mysql://u@h/db", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    [line] = [x for x in result.output.splitlines() if "--store" in x]
    assert "expected postgresql://USER@HOST/DB" in line


def test_fabric_serve_names_an_unreachable_store_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fabric.commands.run import serve

    url = "postgresql://nobody@127.0.0.1:1/none"
    result = CliRunner().invoke(serve, ["--store", url, "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {url}: cannot connect") and result.output.count("\n") == 1
