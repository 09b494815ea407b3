"""Joined hosts across a failover: their host agents and VMs outlive the leader (they are other
processes, on other machines), link again to the address the new leader now listens on, and the
new leader adopts what they run: the same pids, nothing restarted, even when they link again
later than host_failure_timeout after the takeover."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from tests.fabric.cluster.joined_kit import Cluster as Joined
from tests.fabric.cluster.joined_kit import vms_of
from tests.fabric.replica.replica_kit import cluster, stop_all
from tests.integration.test_e2e_join import free_port_pair
from tests.netns import loopback_hosts
from tests.pg_server import PostgresServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

LEASE = 3.0
#: the fast profile's (Settings.fast)
HOST_FAILURE_TIMEOUT = 3.0


@contextmanager
def step(what: str, seconds: float) -> Iterator[None]:
    """A step of the test with its own deadline: past it, fail naming the step (not pytest's
    300 s timeout with no word of where)."""
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"not within {seconds:g} s: {what}") from None


class Load:
    """GET the site every 50 ms; counts the answers and the failures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                try:
                    response = await client.get(self.url)
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append(f"{time.monotonic():.2f} {response.status_code}")
                except httpx.HTTPError as exc:
                    self.failed.append(f"{time.monotonic():.2f} {type(exc).__name__}")
                await anyio.sleep(0.05)


async def test_joined_hosts_keep_their_instances_across_a_failover(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    with loopback_hosts(3, tmp_path / "hosts") as hosts:
        settings = tmp_path / "settings.toml"
        settings.write_text("max_hosts = 0\n")  # only joined hosts run instances
        listen = f"{hosts.gateway}:{free_port_pair(hosts.gateway)}"  # every replica's host port
        async with cluster(tmp_path, postgres, settings) as c:
            with step("replicas a and b serving, one leading", 90):
                await c.start("a", "--listen", listen)
                await c.start("b", "--listen", listen)
                old = await c.leader()
            joined = Joined(state=c.state, hosts=hosts, settings=settings, listen=listen)
            try:
                with step("3 hosts joined and Ready", 90):
                    await joined.join_all((0, 1, 0))
                with step("the deploy operation ended", 90):
                    await joined.deploy(80)
                with step("6 instances ReadyRole", 90):
                    view = await joined.all_ready(80)
                placed = {i.id: i.host for i in view.instances}
                running = {name: vms_of(p) for name, p in joined.joins.items()}
                endpoint = view.endpoints[0]
                load = Load(f"http://{endpoint.host}:{endpoint.port}/")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(load.run)
                    killed = time.monotonic()
                    old.process.send_signal(signal.SIGKILL)
                    # The hosts' agents are slow to link again (frozen): longer than
                    # host_failure_timeout after the takeover. The new leader waits for them
                    # (recovery's RELINK_GRACE) instead of healing their instances elsewhere.
                    agents = [p.pid for p in joined.joins.values()]
                    for pid in agents:
                        os.kill(pid, signal.SIGSTOP)
                    try:
                        with step(f"a replica other than {old.name} leading", LEASE + 35):
                            new = await c.leader(not_=old.name, seconds=LEASE + 30)
                        await anyio.sleep(HOST_FAILURE_TIMEOUT + 2.0)
                    finally:
                        for pid in agents:
                            os.kill(pid, signal.SIGCONT)
                    with step("the hosts Ready again after the failover", 70):
                        await joined.wait_hosts({h.name for h in hosts}, 60)
                    with step("6 instances ReadyRole after the failover", 70):
                        view = await joined.all_ready(60)
                    try:
                        with anyio.fail_after(60):
                            while load.ok == 0 or (
                                load.failed and float(load.failed[-1].split()[0]) > time.monotonic() - 0.5
                            ):
                                await anyio.sleep(
                                    0.1
                                )  # the site answers again through the new leader's balancer
                    except TimeoutError:
                        raise AssertionError(
                            f"the site did not answer steadily within 60 s: {load.ok} answered, "
                            f"last failures {load.failed[-5:]}"
                        ) from None
                    back = time.monotonic() - killed
                    tg.cancel_scope.cancel()
                assert {i.id: i.host for i in view.instances} == placed  # nothing moved
                assert {name: vms_of(p) for name, p in joined.joins.items()} == running  # nothing restarted
                assert all(i.restarts == 0 for i in view.instances), view.instances
                print(
                    f"{new.name} leads; the site answered again {back:.1f} s after the kill; "
                    f"{len(load.failed)} requests failed meanwhile, {load.ok} answered: {load.failed[:3]}..."
                )
            finally:
                stop_all(joined.joins.values())
