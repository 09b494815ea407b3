"""Replicas serving their API over HTTPS (`fabric serve --replica ... --https`, as every replica
whose API is on a non-loopback address does): a client of the follower trusts the cluster CA
alone, and the follower forwards a write to the leader over HTTPS, verifying the leader's
certificate against the same CA (real processes, real PostgreSQL)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from fabric.client import AsyncFabricClient
from fabric.frontend.auth import write_api_url, write_token
from tests.fabric.replica.replica_kit import FABRIC, cluster
from tests.pg_server import PostgresServer

pytestmark = [pytest.mark.timeout(180)]


async def test_a_follower_forwards_a_write_to_the_leader_over_https(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    async with cluster(tmp_path, postgres) as c:
        leader, follower = await c.two("--https")
        assert leader.url.startswith("https://") and follower.url.startswith("https://")
        rows = await c.sql("SELECT name, api_url FROM fabric_replicas ORDER BY name")
        assert all(row["api_url"].startswith("https://") for row in rows), rows  # what followers dial

        client = tmp_path / "client"  # the follower's address and the token, no CA yet
        client.mkdir()
        write_api_url(client, follower.url)
        write_token(client, (c.state / "token").read_text().strip())

        def status() -> subprocess.CompletedProcess[str]:
            argv = [FABRIC, "status", "--state-dir", str(client)]
            return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

        done = await anyio.to_thread.run_sync(status)
        assert done.returncode == 2 and "no CA is pinned" in done.stderr
        assert done.stderr.strip().count("\n") == 0, done.stderr

        shutil.copy(c.state / "cluster" / "ca.pem", client / "ca.pem")
        async with AsyncFabricClient(client, timeout=30.0) as through_follower:
            # a write: only the leader makes it, so the follower forwarded it (over HTTPS, the
            # leader's certificate checked against the cluster CA)
            await through_follower.create_hosted_service("tls-forwarded")
        async with c.client(leader) as at_leader:  # replica_kit's folder: the CA copied in
            names = {h.service_name for h in await at_leader.hosted_services(detail=False)}
        assert "tls-forwarded" in names
        done = await anyio.to_thread.run_sync(status)
        assert done.returncode == 0, done.stderr
