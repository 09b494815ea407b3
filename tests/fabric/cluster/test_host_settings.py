"""A joined host runs with the controller's settings as they are each time it links (a
controller restarted with other settings is followed, not only the one it first met); a joined
host's heartbeat counts from when it was read off its link, not from when the controller
handled it. The host port, the join and the host (its agent too) are real, in this process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import msgspec
import pytest

from actors import Actor, LinkOptions, open_system
from fabric.cluster.ca import ClusterCA
from fabric.cluster.node import Identity, ensure_joined, run_host
from fabric.cluster.port import HostRelay, cluster_dir, serve_cluster
from fabric.cluster.tokens import TokenStore
from fabric.controller.hosts import HostPool
from fabric.host.messages import HostHeartbeat, ReportKey
from fabric.host.remote import JoinedReport
from fabric.settings import Settings
from tests.fabric.cluster.test_relay import FakeListener, FakePeer, Inbox
from tests.integration.test_e2e_join import free_port_pair

pytestmark = [pytest.mark.timeout(60)]

HOST = "127.0.0.1"
#: the host redials soon after the controller went
QUICK = LinkOptions(handshake_timeout=5.0, reconnect_min=0.05, reconnect_max=0.3)


class Heard:
    """How many reports of the joined host the controller got (over its restarts)."""

    def __init__(self) -> None:
        self.more = anyio.Event()

    def one(self) -> None:
        self.more.set()
        self.more = anyio.Event()

    async def wait(self, count: int, seconds: float) -> None:
        """Until ``count`` more reports came (fails after ``seconds``)."""
        with anyio.fail_after(seconds):
            for _ in range(count):
                await self.more.wait()


class Reports(Actor):
    """Stands in for the controller: notes each joined host's report."""

    def __init__(self, heard: Heard) -> None:
        self.heard = heard

    async def receive(self, message: Any) -> Any:
        if isinstance(message, JoinedReport):
            self.heard.one()
        return None


async def controller(
    tg: anyio.abc.TaskGroup, state: Path, settings: Settings, port: int, heard: Heard
) -> anyio.CancelScope:
    """A controller process's host and join ports, with ``settings``, until the scope is cancelled."""
    scope = anyio.CancelScope()

    async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with scope:
            async with open_system() as system:
                reports = await system.spawn(lambda: Reports(heard), name="reports")
                await serve_cluster(
                    system, state, settings, HOST, port, controller=reports, task_status=task_status
                )

    await tg.start(serve)
    return scope


async def test_a_joined_host_takes_the_controllers_settings_each_time_it_links(tmp_path: Path) -> None:
    state, port, heard = tmp_path / "controller", free_port_pair(HOST), Heard()
    slow, quick = Settings.fast(host_heartbeat_interval=5.0), Settings.fast(host_heartbeat_interval=0.1)
    async with anyio.create_task_group() as tg:
        first = await controller(tg, state, slow, port, heard)
        token, _ = TokenStore(cluster_dir(state)).create(600)
        ca_hash = ClusterCA.open(cluster_dir(state)).hash
        identity = Identity(tmp_path / "host")
        joined = await ensure_joined(
            identity, f"{HOST}:{port}", token=token, ca_hash=ca_hash, name="h1", cores=2, fault_domain=0
        )
        tg.start_soon(lambda: run_host(identity, joined, options=QUICK))
        await heard.wait(1, 30)  # heard: every 5 s from now on

        first.cancel()  # the controller goes, and comes back with a heartbeat every 0.1 s
        await controller(tg, state, quick, port, heard)
        await heard.wait(1, 30)
        await heard.wait(5, 5)  # five more within 5 s (one at most with the first settings)
        said = (identity.folder / "hosts" / "h1" / "HostAgent.log").read_text()
        assert "the controller's settings, taken as the link came up: " in said
        assert "host_heartbeat_interval 5.0 -> 0.1" in said
        tg.cancel_scope.cancel()


async def test_a_joined_hosts_heartbeat_counts_from_when_it_was_read(tmp_path: Path) -> None:
    # fabric-hosts stamps a report as it reads it off the host's link ...
    told, peer = Inbox(), FakePeer()
    relay = HostRelay(cast(Any, told), cast(Any, FakeListener({"h1": peer})), Settings.fast())
    beat = HostHeartbeat(host_id="h1", instances={}, address="127.0.0.9", cores=2, boot="b", pid=7)
    await relay.receive(beat)  # not keyed yet: the key goes to the host
    (key,) = [m for m in peer.agent.told if isinstance(m, ReportKey)]
    read = anyio.current_time()
    await relay.receive(msgspec.structs.replace(beat, key=key.key))
    (report,) = told.told
    assert isinstance(report, JoinedReport) and report.at is not None and report.at >= read

    # ... and the controller, handling it 3 s later (its mailbox was busy), counts from then:
    # `fabric hosts` shows a heartbeat 3 s old, and the host's silence runs from then.
    pool = HostPool(cast(Any, None), cast(Any, None), Settings.fast(), tmp_path, on_dead=cast(Any, None))
    late = anyio.current_time() - 3.0
    host, _, _ = pool.heard_joined(beat, cast(Any, None), late)
    assert host.last_seen == late
    [shown] = pool.describe()
    assert 2.9 <= time.time() - shown.last_heard < 4, shown
