"""The site answers through a leader's SIGKILL: every replica serves the endpoints the leader shows
(fabric.replica.balancer), on the same port, so clients of the site lose only what was in flight
on the dead process while nobody leads and the new leader takes over."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from fabric.client.deployments import deploy_service
from fabric.network import Backend, EndpointSpec, open_load_balancer, share_ports, shared_listening
from tests.fabric.cluster.joined_kit import SPREAD
from tests.fabric.cluster.joined_kit import Cluster as Joined
from tests.fabric.replica.replica_kit import cluster, eventually, stop_all
from tests.integration.test_e2e_join import free_port_pair
from tests.netns import loopback_hosts
from tests.pg_server import PostgresServer

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

LEASE = 3.0
#: what a request may take on a loaded machine before it counts as failed
REQUEST_TIMEOUT = 3.0
#: requests that may fail: the one in flight on the dead leader's balancer (a kept-alive
#: connection it held), and one more reset while it died
IN_FLIGHT = 2


class Load:
    """GET the site every 50 ms, each on a new connection (as many browsers make: a kept-alive
    one through the kernel data path never meets a balancer again); answers and failures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        #: (when sent, what went wrong)
        self.failed: list[tuple[float, str]] = []

    async def run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:
            while True:
                sent = time.monotonic()
                try:
                    response = await client.get(self.url)
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append((sent, str(response.status_code)))
                except httpx.HTTPError as exc:
                    self.failed.append((sent, f"{type(exc).__name__}: {exc}"))
                await anyio.sleep(0.05)


def spread_on(port: int, folder: Path) -> Path:
    """The spread service (2 web instances, 1 worker) with its web endpoint on ``port``: a port
    of this run only (another fabric's balancer on 8081 would answer for it)."""
    target = folder / "spread"
    shutil.copytree(SPREAD, target)
    csdef = target / "ServiceDefinition.csdef"
    csdef.write_text(csdef.read_text().replace('port="8081"', f'port="{port}"'))
    cscfg = target / "ServiceConfiguration.Local.cscfg"
    text = cscfg.read_text().replace('<Instances count="3" />', '<Instances count="2" />', 1)
    cscfg.write_text(text.replace('<Instances count="3" />', '<Instances count="1" />'))
    return target


async def test_the_site_answers_through_a_leader_sigkill(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user-space path (what runs without root): as root the leader's nftables rules would
    # outlive it and carry new connections until the new leader sweeps them (benchmarks/failover.py).
    monkeypatch.setenv("REDDOG_LB_KERNEL", "off")
    with loopback_hosts(2, tmp_path / "hosts") as hosts:
        settings = tmp_path / "settings.toml"
        settings.write_text("max_hosts = 0\n")  # only joined hosts run instances: they outlive it
        listen = f"{hosts.gateway}:{free_port_pair(hosts.gateway)}"
        async with cluster(tmp_path, postgres, settings) as c:
            await c.start("a", "--listen", listen)
            await c.start("b", "--listen", listen)
            old = await c.leader()
            joined = Joined(state=c.state, hosts=hosts, settings=settings, listen=listen)
            try:
                await joined.join_all((0, 1))
                async with joined.client() as client:
                    started = await deploy_service(
                        client, spread_on(free_port_pair("127.0.0.1"), tmp_path), None
                    )
                view = await joined.all_ready(count=3)
                endpoint = view.endpoints[0]
                new_name = "b" if old.name == "a" else "a"
                new = c.replicas[new_name]
                # the follower serves the site too once the leader's views show it Ready
                await c.wait_output(new, rf"standby balancer on 127.0.0.1:{endpoint.port}: \d+ instance")
                load = Load(f"http://{endpoint.host}:{endpoint.port}/")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(load.run)
                    await eventually(lambda: _at_least(load, 10), 30, "the site answering")
                    before = list(load.failed)
                    killed = time.monotonic()
                    old.process.send_signal(signal.SIGKILL)
                    await c.leader(not_=old.name, seconds=LEASE + 30)
                    acting = time.monotonic() - killed
                    # the new leader's own balancer takes the port over from its standby one
                    await c.wait_output(
                        new, rf"standby balancer on 127.0.0.1:{endpoint.port}: the leader's own"
                    )
                    answered = load.ok
                    await eventually(lambda: _at_least(load, answered + 20), 60, "20 answers after")
                    tg.cancel_scope.cancel()
                async with c.client(new) as client:
                    after = await client.deployment(started.service, started.slot)
                assert after.endpoints[0].port == endpoint.port
                assert all(i.restarts == 0 for i in after.instances), after.instances
                assert not before, f"failed before the kill: {before}"
                failed = [f"{sent - killed:+.2f} s {what}" for sent, what in load.failed]
                assert len(failed) <= IN_FLIGHT, (
                    f"{len(failed)} of {len(failed) + load.ok} requests failed through the leader's "
                    f"SIGKILL (the new leader acting {acting:.1f} s after it); from the kill: {failed}"
                )
                print(
                    f"{new.name} acting {acting:.1f} s after the kill; {load.ok} answered, failed: {failed}"
                )
            finally:
                stop_all(joined.joins.values())


async def serve_site(text: str, task_status: anyio.abc.TaskStatus[int]) -> None:
    """A one-line HTTP site on a free port of 127.0.0.1 (its port, started)."""

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            body = text.encode()
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
    await listener.serve(answer)


@pytest.mark.timeout(30)
async def test_a_sharing_balancer_listens_once_in_rotation_beside_a_standby() -> None:
    async with anyio.create_task_group() as tg:
        leader_site = await tg.start(serve_site, "leader")
        standby_site = await tg.start(serve_site, "standby")
        share_ports()
        try:
            async with open_load_balancer(EndpointSpec("HttpIn", "http"), kernel=False) as own:
                host, port = own.address
                assert not own.listening and not shared_listening(host, port)
                async with (
                    open_load_balancer(
                        EndpointSpec("HttpIn", "http", port),
                        [Backend("s", host, standby_site)],
                        kernel=False,
                        reuse_port=True,
                        port_attempts=1,
                    ),
                    httpx.AsyncClient(timeout=5) as client,
                ):
                    # the empty one takes no client: every one reaches the standby
                    got = {(await client.get(f"http://{host}:{port}/")).text for _ in range(10)}
                    assert got == {"standby"}
                    own.set_backends([Backend("l", host, leader_site)])
                    with anyio.fail_after(10):
                        while not shared_listening(host, port):
                            await anyio.sleep(0.01)
                    # another endpoint of this process never shares the port
                    async with open_load_balancer(EndpointSpec("Other", "http", port)) as other:
                        assert other.address[1] != port
                    own.stop_listening()  # the standby takes every new client again
                    got = {(await client.get(f"http://{host}:{port}/")).text for _ in range(10)}
                    assert got == {"standby"}
        finally:
            share_ports(False)
        tg.cancel_scope.cancel()


async def _at_least(load: Load, n: int) -> bool:
    return load.ok >= n
