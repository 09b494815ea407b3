"""The goal-state database: records round trip, transactions, pools, versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fabric.controller.store import (
    DeploymentRecord,
    GenerationRecord,
    HostRecord,
    InstanceRecord,
    OperationRecord,
    PublicPortRecord,
    Store,
    StoreError,
    UpgradeRecord,
)


def test_every_record_round_trips(tmp_path: Path) -> None:
    db = tmp_path / "fabric.db"
    store = Store(db, "east")
    upgrade = UpgradeRecord(
        kind="package", mode="Manual", generation=2, role="Web", next_domain=1, domain_count=3
    )
    dep = DeploymentRecord(
        id="d1",
        pool="east",
        service="shop",
        slot="staging",
        name="v1",
        label="first",
        goal="Suspended",
        generation=2,
        upgrade=upgrade,
        folder="/x",
    )
    gen = GenerationRecord(
        deployment_id="d1",
        number=2,
        packages={"Web": "/x/pkg2"},
        main="/x/pkg2",
        configuration=b"\x00<xml/>",
        configuration_name="c.cscfg",
    )
    inst = InstanceRecord(
        vm="shop.v1.Web_IN_0",
        deployment_id="d1",
        role="Web",
        index=0,
        host_id="east-host1",
        ports={"Http": 4100, "Gossip": 4101},
        update_domain=0,
        fault_domain=1,
        generation=2,
    )
    port = PublicPortRecord(deployment_id="d1", role="Web", endpoint="Http", requested=80, port=8080)
    host = HostRecord(id="east-host1", pool="east", number=1, cores=8, fault_domain=0)
    op = OperationRecord(request_id="r1", pool="east", kind="CreateDeployment", target="shop/staging")
    for record in (dep, gen, inst, port, host, op):
        store.put(record)
    store.close()

    again = Store(db, "east")
    assert again.deployments() == [dep]
    assert again.generations("d1") == [gen]
    assert again.instances("d1") == [inst]
    assert again.public_ports("d1") == [port]
    assert again.hosts() == [host]
    assert again.operation("r1") == op
    # The database reads as plain SQL too (the CLI or a person may look).
    rows = sqlite3.connect(db).execute('select vm, "index", host_id from instances').fetchall()
    assert rows == [("shop.v1.Web_IN_0", 0, "east-host1")]
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "fabric.db", "p")
    with pytest.raises(RuntimeError), store.transaction():
        store.put(HostRecord(id="h", pool="p", number=1, cores=2, fault_domain=0))
        raise RuntimeError("half way")
    assert store.hosts() == []


def test_pools_see_only_their_own_records(tmp_path: Path) -> None:
    a, b = Store(tmp_path / "fabric.db", "a"), Store(tmp_path / "fabric.db", "b")
    a.put(DeploymentRecord(id="1", pool="a", service="s", slot="production", name="n"))
    a.put(OperationRecord(request_id="r", pool="a", kind="k"))
    assert b.deployments() == [] and b.operation("r") is None
    assert b.other_pools_services() == {("s", "production")}


def test_interrupted_operations_read_failed(tmp_path: Path) -> None:
    store = Store(tmp_path / "fabric.db", "p")
    store.put(OperationRecord(request_id="r1", pool="p", kind="k"))
    store.put(OperationRecord(request_id="r2", pool="p", kind="k", status="Succeeded"))
    assert store.fail_interrupted("restarted") == 1
    failed = store.operation("r1")
    assert failed is not None and failed.status == "Failed" and failed.error_message == "restarted"
    assert failed.http_status_code == 500 and failed.error_code == "InternalError"
    assert store.operation("r2").status == "Succeeded"  # type: ignore[union-attr]


def test_deleting_a_deployment_takes_its_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "fabric.db", "p")
    store.put(DeploymentRecord(id="d", pool="p", service="s", slot="production", name="n"))
    store.put(InstanceRecord(vm="v", deployment_id="d", role="R", index=0))
    store.put(PublicPortRecord(deployment_id="d", role="R", endpoint="E", requested=1, port=2))
    store.delete_deployment("d")
    assert store.deployments() == [] and store.instances("d") == [] and store.public_ports("d") == []


def test_a_newer_or_foreign_database_is_refused_with_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "fabric.db"
    sqlite3.connect(db).execute("PRAGMA user_version = 99").connection.commit()
    with pytest.raises(StoreError, match=r"schema version 99.*new --state-dir"):
        Store(db, "p")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable fabric database"):
        Store(junk, "p")
