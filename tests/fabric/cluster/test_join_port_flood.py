"""The join port takes anyone's connection (it comes before any credential): a flood of silent
connections holds a bounded number of the controller's descriptors, one past the bound is
closed at once, and the port answers again as soon as they go."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

from fabric.cluster import join
from fabric.cluster.ca import ClusterCA
from fabric.cluster.join import JoinService, fetch_ca, server_context
from fabric.cluster.tokens import TokenStore

pytestmark = [pytest.mark.timeout(60)]

HOST = "127.0.0.1"


async def test_a_flood_of_silent_connections_is_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = ClusterCA.open(tmp_path / "cluster")
    service = JoinService(ca, TokenStore(tmp_path / "cluster"), 1, 3600.0)
    context = server_context(*ca.server_files(HOST), ca.cert_path)
    async with anyio.create_task_group() as tg:
        port = await tg.start(service.serve, HOST, 0, context)
        silent = [socket.create_connection((HOST, port)) for _ in range(join.MAX_CONNECTIONS)]
        try:
            with anyio.fail_after(20):
                while service.open_connections < join.MAX_CONNECTIONS:
                    await anyio.sleep(0.01)
            with socket.create_connection((HOST, port)) as extra:
                extra.settimeout(join.JOIN_TIMEOUT / 2)  # closed long before a join's deadline
                assert await anyio.to_thread.run_sync(extra.recv, 1) == b""
        finally:
            for s in silent:
                s.close()
        assert "the join port serves 64 connections already: closing the one from" in caplog.text
        with anyio.fail_after(20):
            while service.open_connections:
                await anyio.sleep(0.01)
        assert (await fetch_ca(HOST, port, ca.hash)) == ca.cert_pem
        tg.cancel_scope.cancel()
