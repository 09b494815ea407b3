"""A command's change and its operation's record are one transaction: the database failing at
the record (a trigger raising admin_shutdown, as a server going down would) refuses the command
with 503, and neither the store nor the controller's memory keeps any of its change (a host
drain's cordon included)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from fabric.controller import ask, wait_operation
from fabric.controller.host_admin import DrainHost, HostPage, ListHosts
from fabric.controller.messages import ChangeConfiguration, ControllerError, SetDeploymentStatus
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    config,
    create,
    open_controller,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.timeout(120)

FAIL_RECORDS = """
CREATE FUNCTION test_fail_fn() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'the database is shutting down' USING ERRCODE = 'admin_shutdown';
END $$ LANGUAGE plpgsql;
CREATE TRIGGER test_fail BEFORE INSERT ON operations FOR EACH ROW EXECUTE FUNCTION test_fail_fn();
"""


def rows(url: str) -> tuple[object, ...]:
    """What the goal state holds of the deployment: goal, generations, instances, operations."""
    with psycopg.connect(url) as conn:
        return tuple(
            conn.execute(sql).fetchall()
            for sql in (
                "SELECT goal, generation FROM deployments",
                "SELECT number FROM generations ORDER BY number",
                "SELECT vm FROM instances ORDER BY vm",
                "SELECT count(*) FROM operations",
            )
        )


async def test_a_command_whose_record_fails_changes_nothing(
    service: ServiceFactory, world: World, state_dir: Path, postgres: PostgresServer
) -> None:
    url = postgres.create_database()
    async with open_controller(state_dir, world, store_url=url) as ref:
        assert (await create(ref, service())).status == "Succeeded"
        before = await wait_view(ref, all_ready)
        stored = rows(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FAIL_RECORDS)
        grow = ChangeConfiguration(
            service="demo", slot="production", configuration=config(front=3), configuration_name="config.toml"
        )
        for command in (SetDeploymentStatus(service="demo", slot="production", status="Suspended"), grow):
            with pytest.raises(ControllerError) as refused:
                await ask(ref, command)
            assert refused.value.status == 503 and "nothing changed" in refused.value.message
            assert rows(url) == stored, type(command).__name__
            now = await view(ref)
            assert (now.status, [i.id for i in now.instances]) == (
                before.status,
                [i.id for i in before.instances],
            )
        # a drain cordons its host with its operation's record: refused whole, not left cordoned
        page: HostPage = await ask(ref, ListHosts(limit=500))
        host = next(h.name for h in page.hosts if h.instance_count)
        with pytest.raises(ControllerError) as refused:
            await ask(ref, DrainHost(name=host))
        assert refused.value.status == 503 and "nothing changed" in refused.value.message
        page = await ask(ref, ListHosts(limit=500))
        assert [h.name for h in page.hosts if h.cordoned] == []
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM hosts WHERE cordoned_at != 0").fetchone() == (0,)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER test_fail ON operations")
        # the same change, once the database takes it: from the state before, as if never tried
        accepted = await ask(ref, grow)
        assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
        after = await wait_view(ref, lambda v: all_ready(v) and len(v.instances) == 4)
        assert sorted(i.id for i in after.instances) == [
            "Back_IN_0",
            "Front_IN_0",
            "Front_IN_1",
            "Front_IN_2",
        ]
