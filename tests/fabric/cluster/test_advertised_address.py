"""A joined host must advertise the address its link comes from: one advertising another (the
controller machine's loopback, where the load balancer would then send its endpoints' clients)
is not heard, and the controller's log says why; a host joined with --address links from that
address and is heard. The host port and the hosts are real (in this process, and a real
`fabric host join`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from actors import Actor, LinkOptions, open_system
from fabric.cluster.ca import ClusterCA
from fabric.cluster.node import Identity, ensure_joined, run_host
from fabric.cluster.port import cluster_dir, serve_cluster
from fabric.cluster.tokens import TokenStore
from fabric.host.remote import JoinedReport
from fabric.settings import Settings
from tests.integration.test_e2e_join import FABRIC, free_port_pair, running, stop

pytestmark = [pytest.mark.timeout(60)]

HOST = "127.0.0.1"


class Addresses(Actor):
    """Stands in for the controller: the address each joined host's heartbeat advertises."""

    def __init__(self, heard: dict[str, str], more: list[anyio.Event]) -> None:
        self.heard, self.more = heard, more

    async def receive(self, message: Any) -> Any:
        if isinstance(message, JoinedReport):
            self.heard[message.heartbeat.host_id] = message.heartbeat.address
            self.more[0].set()
        return None


async def test_a_host_advertising_an_address_its_link_does_not_come_from_is_not_heard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "fabric.cluster")
    state, port = tmp_path / "controller", free_port_pair(HOST)
    heard: dict[str, str] = {}
    more = [anyio.Event()]

    async def until_heard(name: str) -> str:
        with anyio.fail_after(30):
            while name not in heard:
                await more[0].wait()
                more[0] = anyio.Event()
        return heard[name]

    async with open_system() as system, anyio.create_task_group() as tg:
        reports = await system.spawn(lambda: Addresses(heard, more), name="reports")
        settings = Settings.fast(host_heartbeat_interval=0.1)
        await tg.start(
            lambda task_status: serve_cluster(
                system, state, settings, HOST, port, controller=reports, task_status=task_status
            )
        )
        token, _ = TokenStore(cluster_dir(state)).create(600)
        ca_hash = ClusterCA.open(cluster_dir(state)).hash

        # A real host joined with --address links from it, and is heard with it.
        join = [FABRIC, "host", "join", f"{HOST}:{port}", "--token", token, "--ca-hash", ca_hash]
        join += [
            "--name",
            "good",
            "--address",
            "127.0.0.3",
            "--cores",
            "1",
            "--state-dir",
            str(tmp_path / "good"),
        ]
        async with running(join) as good:
            assert await until_heard("good") == "127.0.0.3"

            # A host advertising the controller machine's loopback from elsewhere is not heard.
            identity = Identity(tmp_path / "evil")
            evil = await ensure_joined(
                identity,
                f"{HOST}:{port}",
                token=token,
                ca_hash=ca_hash,
                name="evil",
                cores=1,
                fault_domain=0,
                advertise="127.0.0.1",
            )
            tg.start_soon(lambda: run_host(identity, evil, options=LinkOptions(source="127.0.0.5")))
            why = "host 'evil' advertises address 127.0.0.1 but its link comes from 127.0.0.5"
            with anyio.fail_after(30):
                while not any(why in r.getMessage() for r in caplog.records):
                    await anyio.sleep(0.05)
            count = len(heard)
            await anyio.sleep(1.0)  # ten of its heartbeats: none heard, the line not repeated
            assert "evil" not in heard and len(heard) == count
            assert sum(why in r.getMessage() for r in caplog.records) == 1
            await stop(good)
        tg.cancel_scope.cancel()
