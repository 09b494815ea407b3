"""The controller with its goal state in a real PostgreSQL server: a deployment is created,
suspended, brought back by a new controller from the database as it was, run again and
deleted, leaving no rows behind."""

from __future__ import annotations

from pathlib import Path

import psycopg

from fabric.controller import ask, wait_operation
from fabric.controller.messages import DeleteDeployment, DeploymentView, ListDeployments, SetDeploymentStatus
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    create,
    open_controller,
    wait_view,
)
from tests.fabric.controller.controller_standin import World
from tests.pg_server import PostgresServer


def placement(v: DeploymentView) -> dict[str, tuple[str, int, int, dict[str, str]]]:
    return {i.id: (i.host, i.update_domain, i.fault_domain, i.endpoints) for i in v.instances}


async def test_a_deployment_lives_in_postgresql_across_a_controller_restart(
    service: ServiceFactory, world: World, state_dir: Path, postgres: PostgresServer
) -> None:
    url = postgres.create_database()
    async with open_controller(state_dir, world, store_url=url) as ref:
        op = await create(ref, service())
        assert op.status == "Succeeded" and op.description == "started 3 instances"
        before = await wait_view(ref, all_ready)
        accepted = await ask(ref, SetDeploymentStatus(service="demo", slot="production", status="Suspended"))
        assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
    assert not (state_dir / "fabric.db").exists()  # nothing went to SQLite
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM instances").fetchone() == (3,)
        assert conn.execute("SELECT goal FROM deployments").fetchone() == ("Suspended",)

    again = World()
    async with open_controller(state_dir, again, store_url=url) as ref:
        [after] = await ask(ref, ListDeployments())
        assert after.status == "Suspended" and again.events("start") == []
        assert placement(after) == placement(before)
        accepted = await ask(ref, SetDeploymentStatus(service="demo", slot="production", status="Running"))
        assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
        await wait_view(ref, all_ready)
        accepted = await ask(ref, DeleteDeployment(service="demo", slot="production"))
        assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
        assert await ask(ref, ListDeployments()) == []
    with psycopg.connect(url) as conn:
        for table in ("deployments", "instances", "generations", "public_ports"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        statuses = {r[0] for r in conn.execute("SELECT status FROM operations")}
        assert statuses == {"Succeeded"}


async def test_the_database_restarted_under_a_single_controller(
    service: ServiceFactory, world: World, state_dir: Path, postgres: PostgresServer
) -> None:
    """Without replicas too: while PostgreSQL is down a command is refused with 503 (nothing
    changed), what runs keeps running, and the controller carries on once it is back."""
    import anyio.to_thread
    import pytest

    from fabric.controller.messages import ControllerError

    url = postgres.create_database()
    async with open_controller(state_dir, world, store_url=url) as ref:
        await create(ref, service())
        before = await wait_view(ref, all_ready)
        await anyio.to_thread.run_sync(postgres.stop_server)
        try:
            with pytest.raises(ControllerError) as refused:
                await ask(ref, SetDeploymentStatus(service="demo", slot="production", status="Suspended"))
            assert refused.value.status == 503 and "nothing changed" in refused.value.message
            [during] = await ask(ref, ListDeployments())  # reads answer; nothing stopped
            assert during.status == "Running" and placement(during) == placement(before)
        finally:
            await anyio.to_thread.run_sync(postgres.start_server)
        accepted = await ask(ref, SetDeploymentStatus(service="demo", slot="production", status="Suspended"))
        assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
        assert world.events("stop")  # the controller acts again
