"""Instances on joined hosts, for real: a `fabric serve --listen` and three `fabric host join`
processes on test hosts (each in a network namespace of its own as root, else on a loopback
alias), a deployment of 2 roles x 3 instances spread over them and served through the load
balancer; a host cut off (its link down; a frozen agent on loopback) declared dead within
host_failure_timeout + 1 s and healed onto the others, its stale VMs stopped when it is back;
a host SIGKILLed and restarted with its certificate alone, its instances back on it; a
controller restart that every host survives by itself."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from fabric.client.deployments import deploy_service
from tests.fabric.certs.cert_kit import leaf, make_ca, pem_file
from tests.fabric.cluster.joined_kit import (
    FABRIC,
    SPREAD,
    Cluster,
    answers,
    cluster,
    one_joined_host,
    poll,
    vms_of,
)
from tests.integration.e2e_kit import SERVICES, copy_service
from tests.netns import NetHosts, loopback_hosts, net_hosts, why_unavailable

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

#: fault domains of h1, h2, h3
DOMAINS = (0, 1, 0)


async def up(c: Cluster) -> None:
    await c.start_controller()
    await c.join_all(DOMAINS)


def addresses(c: Cluster) -> dict[str, str]:
    return {h.name: h.address for h in c.hosts}


@pytest.fixture(params=["namespaces", "loopback"])
def three_hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NetHosts]:
    """Three test hosts: each in a network namespace (root only), or on a loopback alias."""
    if request.param == "namespaces":
        reason = why_unavailable()
        if reason is not None:
            pytest.skip(reason)
        with net_hosts(3, tmp_path / "hosts") as hosts:
            yield hosts
    else:
        with loopback_hosts(3, tmp_path / "hosts") as hosts:
            yield hosts


async def keep_asking(url: str, outcomes: list[tuple[float, bool]]) -> None:
    """Ask ``url`` again and again (a new connection each time), noting what was answered."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        while True:
            began = time.monotonic()
            try:
                ok = (await client.get(url, headers={"connection": "close"})).status_code == 200
            except httpx.HTTPError:
                ok = False
            outcomes.append((began, ok))
            await anyio.sleep(0.1)


async def served_by(url: str, count: int) -> set[str]:
    """The addresses the instances that answered listen on (each answer says its own)."""
    return {line.split()[1].rsplit(":", 1)[0] for line in await answers(url, count)}


async def test_spread_served_and_healed(three_hosts: NetHosts, tmp_path: Path) -> None:
    hosts = three_hosts
    async with cluster(hosts, tmp_path) as c:
        await up(c)
        await c.deploy()
        view = await c.all_ready()
        where = {i.id: i.host for i in view.instances}
        for role in ("Hello", "Worker"):  # each role's 3 instances on 3 machines
            assert {where[f"{role}_IN_{n}"] for n in range(3)} == {"h1", "h2", "h3"}, where
        for i in view.instances:  # the host's own address, a port it chose
            assert (
                next(iter(i.endpoints.values()), "").startswith(addresses(c)[i.host] + ":") or not i.endpoints
            )
        endpoint = view.endpoints[0]
        url = f"http://{endpoint.host}:{endpoint.port}/"
        assert await served_by(url, 9) == {h.address for h in hosts}

        # Cut h3 off: its link down (namespaces), or its agent frozen (loopback: one network).
        h3, join3 = hosts[2], c.joins["h3"]
        stale = vms_of(join3)
        assert len(stale) == 2, stale
        outcomes: list[tuple[float, bool]] = []  # (when a request began, whether it was answered)
        cut = time.monotonic()
        if hosts.isolated:
            h3.set_link(False)
        else:
            join3.send_signal(signal.SIGSTOP)

        async def h3_dead() -> bool:
            async with c.client() as client:
                return any(h.name == "h3" and h.state == "Dead" for h in await client.all_hosts())

        async with anyio.create_task_group() as tg:
            for _ in range(3):  # three clients at once
                tg.start_soon(keep_asking, url, outcomes)
            await poll(h3_dead, 30, "h3 declared dead")
            # host_failure_timeout (3 s) + 1 s of silence at most, as the controller saw it
            said = re.search(r"host h3 is dead \(no heartbeat for ([0-9.]+) s\)", c.serve_log())
            assert said is not None and float(said[1]) <= 3.0 + 1.0, said
            assert time.monotonic() - cut <= 15.0  # as the API shows it, on a loaded machine
            view = await c.all_ready(avoid="h3")
            tg.cancel_scope.cancel()
        # Through the cut every request is answered (the balancer retries a connect that fails
        # on another instance), but those in flight on h3 as it went.
        failed = [round(at - cut, 2) for at, ok in outcomes if not ok and at > cut + 0.5]
        assert len(outcomes) >= 3 and not failed, (failed, len(outcomes))
        assert await served_by(url, 6) == {hosts[0].address, hosts[1].address}

        # Back: what it ran is stopped (the goal state wins), each instance runs once.
        if hosts.isolated:
            h3.set_link(True)
        else:
            join3.send_signal(signal.SIGCONT)
        await poll(lambda: not vms_of(join3), 60, "h3's stale VMs stopped")
        await c.wait_hosts({"h3"})
        running = Counter(vm for p in c.joins.values() for vm in vms_of(p))
        assert running == Counter({i.id: 1 for i in view.instances}), running
        assert await served_by(url, 6) == {hosts[0].address, hosts[1].address}


async def test_host_and_controller_restarts(three_hosts: NetHosts, tmp_path: Path) -> None:
    hosts = three_hosts
    # Long enough that a SIGKILLed host is back before it would be declared dead.
    async with cluster(hosts, tmp_path, host_failure_timeout=30.0) as c:
        await up(c)
        await c.deploy()
        view = await c.all_ready()
        endpoint = view.endpoints[0]
        url = f"http://{endpoint.host}:{endpoint.port}/"
        placed = {i.id: i.host for i in view.instances}

        # h1's agent SIGKILLed: its VMs go with it; restarted with its certificate alone.
        join1 = c.joins["h1"]
        before = vms_of(join1)
        join1.kill()
        join1.wait(timeout=30)
        again = c.join(hosts[0], fault_domain=DOMAINS[0], first=False)
        await poll(lambda: len(vms_of(again)) == 2, 90, "h1's instances started on it again")
        assert set(vms_of(again).values()).isdisjoint(before.values())
        view = await c.all_ready()
        assert {i.id: i.host for i in view.instances} == placed  # nothing moved
        assert await served_by(url, 9) == {h.address for h in hosts}

        # The controller restarts: every host links again by itself; its VMs run on.
        running = {name: vms_of(p) for name, p in c.joins.items()}
        await c.stop_controller()
        await c.start_controller()
        await c.wait_hosts({h.name for h in hosts}, 60)
        view = await c.all_ready()
        assert {i.id: i.host for i in view.instances} == placed
        assert {name: vms_of(p) for name, p in c.joins.items()} == running
        endpoint = view.endpoints[0]
        url = f"http://{endpoint.host}:{endpoint.port}/"
        assert await served_by(url, 9) == {h.address for h in hosts}

        # fabric logs of an instance on a joined host: read by that host, over the link.
        host = placed["Worker_IN_1"]
        argv = [FABRIC, "logs", "Worker_IN_1", "--state-dir", str(c.state)]
        listed = await anyio.run_process([*argv, "--list"])
        assert b"WaWorkerHost" in listed.stdout and f"{host}:vms/".encode() in listed.stdout, listed.stdout
        shown = await anyio.run_process([*argv, "--file", "stdout"])
        assert b"Worker_IN_1: starting" in shown.stdout, shown.stdout

        # A reboot and an upgrade on joined hosts: the new package is shipped to each host once.
        vm = vms_of(c.joins[placed["Hello_IN_0"]])["Hello_IN_0"]
        rebooted = await anyio.run_process([FABRIC, "reboot", "Hello_IN_0", "--state-dir", str(c.state)])
        assert rebooted.returncode == 0
        assert vms_of(c.joins[placed["Hello_IN_0"]])["Hello_IN_0"] != vm
        v2 = tmp_path / "spread-v2"
        shutil.copytree(SPREAD, v2)
        wsgi = v2 / "Hello" / "wsgi.py"
        wsgi.write_text(wsgi.read_text().replace('body = f"{me.id}', 'body = f"v2 {me.id}'))
        upgraded = await anyio.run_process([FABRIC, "upgrade", str(v2), "--state-dir", str(c.state)])
        assert upgraded.returncode == 0
        view = await c.all_ready()
        assert all(line.startswith("v2 ") for line in await answers(url, 6))
        for host in hosts:
            assert len(list((host.state_dir / "host" / "packages").iterdir())) == 3  # Hello 1, 2; Worker


async def test_an_uploaded_certificate_reaches_a_joined_host(tmp_path: Path) -> None:
    ca = make_ca()
    made = leaf(ca, "echo.test")
    with loopback_hosts(1, tmp_path / "hosts") as hosts:
        async with cluster(hosts, tmp_path) as c:
            await one_joined_host(c)
            async with c.client() as client:
                await client.create_hosted_service("tlsworker")
                await client.add_certificate("tlsworker", pem_file(made), certificate_format="pem")
                service = copy_service(
                    SERVICES / "tls-worker", tmp_path, replace={"SSL_THUMBPRINT": made.thumbprint}
                )
                await deploy_service(client, service, None)
                view = await client.deployment("tlsworker", "production")
            endpoint = view.endpoints[0]

            def ask() -> bytes:
                trust = ssl.create_default_context(cadata=ca.certificate_pem())
                with (
                    socket.create_connection((endpoint.host, endpoint.port), timeout=10) as raw,
                    trust.wrap_socket(raw, server_hostname="echo.test") as tls,
                ):
                    return tls.recv(100)

            async def answered() -> bytes | None:
                try:
                    return await anyio.to_thread.run_sync(ask)
                except OSError:
                    return None  # the worker opens its listener in run(), a moment after Ready

            assert await poll(answered, 60, "the TLS worker on h1 answering") == b"Echo_IN_0"
            assert (hosts[0].state_dir / "host" / "certificates").is_dir()
