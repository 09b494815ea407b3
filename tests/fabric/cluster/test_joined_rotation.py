"""A joined host that goes NotReady takes its instances out of the load balancer's rotation at
once, long before it is declared dead, and gives them back when it is Ready again: for real, a
`fabric serve --listen` and two `fabric host join` on loopback aliases; h2's agent frozen
(SIGSTOP) while its VMs serve on, so only the controller's rotation can keep requests off them."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from fabric.client.deployments import deploy_service
from tests.fabric.cluster.joined_kit import SPREAD, Cluster, answers, cluster, poll, vms_of
from tests.integration.e2e_kit import copy_service
from tests.netns import loopback_hosts

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def state_of(c: Cluster, name: str) -> str:
    async with c.client() as client:
        return next(h.state for h in await client.all_hosts() if h.name == name)


async def served_by(url: str, count: int) -> set[str]:
    """The addresses of the instances that answered ``count`` fresh connections."""
    return {line.split()[1].rsplit(":", 1)[0] for line in await answers(url, count)}


async def test_a_not_ready_joined_host_leaves_rotation(tmp_path: Path) -> None:
    with loopback_hosts(2, tmp_path / "hosts") as hosts:
        # Declared dead only after 60 s: what keeps requests off h2 before is its NotReady.
        async with cluster(hosts, tmp_path, host_failure_timeout=60.0) as c:
            await c.start_controller()
            await c.join_all((0, 1))
            async with c.client() as client:
                await deploy_service(client, copy_service(SPREAD, tmp_path, count=2), None)
            view = await c.all_ready(count=4)
            url = f"http://{view.endpoints[0].host}:{view.endpoints[0].port}/"
            both = {h.address for h in hosts}
            await poll(lambda: _served_is(url, both), 30, "both hosts' Hello instances served")

            join2 = c.joins["h2"]
            join2.send_signal(signal.SIGSTOP)  # no heartbeat from h2; its VMs run on
            await poll(lambda: _served_is(url, {hosts[0].address}), 25, "only h1 served")
            assert await state_of(c, "h2") == "NotReady"
            assert "Hello_IN_1" in vms_of(join2) or "Hello_IN_0" in vms_of(join2)

            join2.send_signal(signal.SIGCONT)
            await c.wait_hosts({"h2"})
            await poll(lambda: _served_is(url, both), 30, "h2's instance back in rotation")


async def _served_is(url: str, wanted: set[str]) -> bool:
    return await served_by(url, 2 * len(wanted) + 2) == wanted
