"""A follower's reads from the leader's views in a real PostgreSQL database never show less than
the views hold: a deployment the views hold is answered even while its hosted service's record
does not name its pool yet (RDFE saves the pool after the controller accepted the deployment)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from fabric.controller.messages import DeploymentView
from fabric.controller.pg_store import Database, migrate
from fabric.frontend.store import HostedServiceRecord, SubscriptionRecord
from fabric.replica import reads
from fabric.replica.views import SUBSCRIPTIONS, deployment_key
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.timeout(60)


async def get(db: Database, path: str) -> tuple[int, Any]:
    """A follower's answer to GET ``path``: its status and JSON body."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"method": "GET", "path": path, "headers": [(b"authorization", b"Bearer t")]}
    await reads.answer(db, "t", "b", scope, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], msgspec.json.decode(body)


async def test_a_stored_deployment_is_answered_before_its_pool_is_recorded(postgres: PostgresServer) -> None:
    db = Database(postgres.create_database())
    await db.open()
    try:
        await db.run(migrate, write=True)
        sub = SubscriptionRecord(
            id="s1", name="s1", hosted_services={"hello": HostedServiceRecord(name="hello")}
        )
        view = DeploymentView(service="hello", slot="production", name="d", id="1", status="Running")
        rows = {
            SUBSCRIPTIONS: msgspec.json.encode([sub]),
            deployment_key("hello", "production"): msgspec.json.encode(view),
        }

        def write(conn: Any) -> None:
            for key, body in rows.items():
                conn.execute(
                    "INSERT INTO fabric_views (key, body, written_at) VALUES (%s, %s, now())", (key, body)
                )

        await db.run(write, write=True)
        status, body = await get(
            db, "/subscriptions/s1/services/hostedservices/hello/deploymentslots/production"
        )
        assert status == 200 and body["name"] == "d", body
        status, body = await get(
            db, "/subscriptions/s1/services/hostedservices/hello/deploymentslots/staging"
        )
        assert status == 404, body
    finally:
        await db.aclose()
