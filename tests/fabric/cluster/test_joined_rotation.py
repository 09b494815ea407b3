"""Joined hosts for real (a `fabric serve --listen` and two `fabric host join` on loopback
aliases): a host that goes NotReady takes its instances out of the load balancer's rotation at
once, long before it is declared dead, and gets them back when it is Ready again (h2's agent
frozen while its VMs serve on, so only the controller's rotation can keep requests off them);
and what a deleted deployment was shipped (package, certificate, the controller's tar) is
removed once nothing uses it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from fabric.client.deployments import delete_and_wait, deploy_service
from tests.fabric.certs.cert_kit import leaf, make_ca, pem_file
from tests.fabric.cluster.joined_kit import SPREAD, Cluster, answers, cluster, poll, vms_of
from tests.integration.e2e_kit import SERVICES, copy_service
from tests.netns import loopback_hosts

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def state_of(c: Cluster, name: str) -> str:
    async with c.client() as client:
        return next(h.state for h in await client.all_hosts() if h.name == name)


async def served_is(url: str, wanted: set[str]) -> bool:
    """Whether the instances that answer fresh connections listen on exactly ``wanted``."""
    got = {line.split()[1].rsplit(":", 1)[0] for line in await answers(url, 2 * len(wanted) + 2)}
    return got == wanted


def shipped(c: Cluster) -> tuple[int, int, int]:
    """Packed tars on the controller; packages and certificates on the hosts."""
    count = lambda folder, pattern: len(list(folder.glob(pattern))) if folder.is_dir() else 0  # noqa: E731
    hosts = [h.state_dir / "host" for h in c.hosts]
    return (
        count(c.state / "cluster" / "packages", "*.tar"),
        sum(count(h / "packages", "*") for h in hosts),
        sum(count(h / "certificates", "*/sha1-*") for h in hosts),
    )


async def test_not_ready_leaves_rotation_and_unused_shipments_go(tmp_path: Path) -> None:
    with loopback_hosts(2, tmp_path / "hosts") as hosts:
        # Declared dead only after 60 s: what keeps requests off h2 before is its NotReady.
        async with cluster(hosts, tmp_path, host_failure_timeout=60.0, package_prune_after=1.0) as c:
            await c.start_controller()
            await c.join_all((0, 1))
            async with c.client() as client:
                await deploy_service(client, copy_service(SPREAD, tmp_path, count=2), None)
            view = await c.all_ready(count=4)
            url = f"http://{view.endpoints[0].host}:{view.endpoints[0].port}/"
            both = {h.address for h in hosts}
            await poll(lambda: served_is(url, both), 30, "both hosts' Hello instances served")

            join2 = c.joins["h2"]
            join2.send_signal(signal.SIGSTOP)  # no heartbeat from h2; its VMs run on
            await poll(lambda: served_is(url, {hosts[0].address}), 25, "only h1 served")
            assert await state_of(c, "h2") == "NotReady"
            assert any(vm.startswith("Hello_IN_") for vm in vms_of(join2))
            join2.send_signal(signal.SIGCONT)
            await c.wait_hosts({"h2"})
            await poll(lambda: served_is(url, both), 30, "h2's instance back in rotation")

            # A deployment with a certificate, deleted: what was shipped for it goes.
            before = shipped(c)
            made = leaf(make_ca(), "echo.test")
            async with c.client() as client:
                await client.create_hosted_service("tlsworker")
                await client.add_certificate("tlsworker", pem_file(made), certificate_format="pem")
                tls = copy_service(
                    SERVICES / "tls-worker", tmp_path, replace={"SSL_THUMBPRINT": made.thumbprint}
                )
                await deploy_service(client, tls, None)
                grown = (before[0] + 1, before[1] + 1, 1)
                await poll(lambda: shipped(c) == grown, 60, f"{grown} shipped (tars, packages, certificates)")
                await delete_and_wait(client, "tlsworker", "production")
            await poll(
                lambda: shipped(c) == before, 30, f"back to {before} shipped (tars, packages, certificates)"
            )
