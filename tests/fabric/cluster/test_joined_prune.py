"""What was shipped to a joined host is removed once nothing uses it, for real (a `fabric serve
--listen` and a `fabric host join` on a loopback alias): after the deployment is deleted, the
host drops its package and the hosted service's certificate, and the controller its packed tar."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.client.deployments import delete_and_wait, deploy_service
from tests.fabric.certs.cert_kit import leaf, make_ca, pem_file
from tests.fabric.cluster.joined_kit import cluster, one_joined_host, poll
from tests.integration.e2e_kit import SERVICES, copy_service
from tests.netns import loopback_hosts

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def entries(folder: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in folder.glob(pattern)) if folder.is_dir() else []


async def test_what_no_deployment_uses_is_removed(tmp_path: Path) -> None:
    with loopback_hosts(1, tmp_path / "hosts") as hosts:
        async with cluster(hosts, tmp_path, package_prune_after=1.0) as c:
            await one_joined_host(c)
            made = leaf(make_ca(), "echo.test")
            async with c.client() as client:
                await client.create_hosted_service("tlsworker")
                await client.add_certificate("tlsworker", pem_file(made), certificate_format="pem")
                replace = {"SSL_THUMBPRINT": made.thumbprint}
                await deploy_service(
                    client, copy_service(SERVICES / "tls-worker", tmp_path, replace=replace), None
                )
            await c.all_ready(count=1)
            host = hosts[0].state_dir / "host"
            tars = c.state / "cluster" / "packages"
            assert len(entries(host / "packages", "*")) == 1
            assert len(entries(host / "certificates" / "tlsworker", "sha1-*")) == 1
            assert len(entries(tars, "*.tar")) == 1

            async with c.client() as client:
                await delete_and_wait(client, "tlsworker", "production")

            def gone() -> bool:
                return not (
                    entries(host / "packages", "*")
                    or entries(host / "certificates", "*")
                    or entries(tars, "*.tar")
                )

            await poll(gone, 30, "the package, certificate and tar no deployment uses removed")
