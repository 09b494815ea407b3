"""An instance input endpoint (a public port per instance) answers through a leader's SIGKILL:
every replica serves it as it serves load-balanced endpoints (fabric.replica.balancer), so the
instance stays reachable on its own port while nobody leads (the user-space path: as root the
dead leader's nftables rules would carry it anyway, see test_replica_balancer)."""

from __future__ import annotations

import shutil
import signal
import socket
from pathlib import Path

import anyio
import pytest

from fabric.client.deployments import deploy_service
from tests.fabric.replica.replica_kit import cluster, eventually
from tests.fabric.replica.test_replica_joined import Load, step
from tests.pg_server import PostgresServer

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

LEASE = 3.0
DIRECT = Path(__file__).parent / "services" / "direct"


def free_range(size: int = 10) -> int:
    """The first of ``size`` ports free on 127.0.0.1 now (a range of this run's own)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + size > 65535:
            continue
        free = True
        for port in range(first, first + size):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return first
    raise AssertionError("no free range of ports")


async def test_an_instance_input_endpoint_answers_while_nobody_leads(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDDOG_LB_KERNEL", "off")  # the user-space path, inherited by the replicas
    service = tmp_path / "direct"
    shutil.copytree(DIRECT, service)
    first = free_range()
    csdef = service / "ServiceDefinition.csdef"
    csdef.write_text(csdef.read_text().replace('min="10000" max="10009"', f'min="{first}" max="{first + 9}"'))
    async with cluster(tmp_path, postgres) as c:
        with step("replicas a and b serving, one leading", 90):
            old, other = await c.two()
        async with c.client(other) as client:
            with step("the instance ReadyRole", 120):
                shown = await deploy_service(client, service, None)

                async def ready() -> object:
                    view = await client.deployment(shown.service, "production")
                    return view if [i.status for i in view.instances] == ["ReadyRole"] else None

                view = await eventually(ready, 110, "the instance ReadyRole")
            [endpoint] = [e for e in view.endpoints if e.name == "Http.Direct_IN_0"]
            with step(f"{other.name}'s standby balancer on the instance's port", 30):
                await c.wait_output(
                    other, rf"standby balancer on {endpoint.host}:{endpoint.port}: 1 instance"
                )
            load = Load(f"http://{endpoint.host}:{endpoint.port}/")
            async with anyio.create_task_group() as tg:
                tg.start_soon(load.run)
                with step("the instance answering on its port", 30):
                    while load.ok == 0:
                        await anyio.sleep(0.05)
                old.process.send_signal(signal.SIGKILL)
                await old.process.wait()
                answered = load.ok
                with step(f"a replica other than {old.name} leading", LEASE + 35):
                    await c.leader(not_=old.name, seconds=LEASE + 30)
                leaderless = load.ok - answered
                with step("the instance answering under the new leader", 30):
                    more = load.ok
                    while load.ok < more + 5:
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
        # the follower's standby answered while nobody led (before: refused until the takeover)
        assert leaderless > 0, (leaderless, load.failed[:5])
        print(f"{leaderless} answered while nobody led; {len(load.failed)} failed: {load.failed[:3]}")
