"""End to end, real processes: an https endpoint served by W3WP through the load balancer (TCP
passed through untouched), each of two sites presenting its own certificate by SNI, verified
by httpx against a test CA; an https probe; an expired certificate refused at deploy; and a
certificate rotated by a configuration change while requests go on, none dropped."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from fabric.certs import ParsedCertificate
from fabric.client.errors import BadRequest
from tests.fabric.certs.cert_kit import expired, leaf, make_ca, pem_file
from tests.integration.e2e_kit import SERVICES, copy_service, running_fabric

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

CONFIG = "ServiceConfiguration.Local.cscfg"


def der(parsed: ParsedCertificate) -> bytes:
    return parsed.certificate.public_bytes(Encoding.DER)


async def presented(port: int, server_name: str) -> bytes:
    """The certificate the load balancer's address presents to a handshake for this SNI name."""

    def handshake() -> bytes:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            found = tls.getpeercert(binary_form=True)
            assert found is not None
            return found

    return await anyio.to_thread.run_sync(handshake)


async def test_https_with_sni_through_the_load_balancer_and_a_rotation_without_a_dropped_request(
    tmp_path: Path,
) -> None:
    ca = make_ca()
    alpha, beta, alpha_next, alpha_old = (
        leaf(ca, "alpha.test"),
        leaf(ca, "beta.test"),
        leaf(ca, "alpha.test"),
        expired(ca, "alpha.test"),
    )
    trust = ssl.create_default_context(cadata=ca.certificate_pem())
    async with running_fabric(tmp_path) as fab:
        async with fab.client() as client:
            await client.create_hosted_service("secure")
            for made in (alpha, beta, alpha_next, alpha_old):
                await client.add_certificate("secure", pem_file(made), certificate_format="pem")

        stale = copy_service(
            SERVICES / "https",
            tmp_path,
            replace={"ALPHA_THUMBPRINT": alpha_old.thumbprint, "BETA_THUMBPRINT": beta.thumbprint},
        )
        with pytest.raises(BadRequest, match=f"certificate {alpha_old.thumbprint} expired on"):
            await fab.deploy(stale)
        assert await fab.views() == []  # nothing deployed

        service = copy_service(
            SERVICES / "https",
            tmp_path,
            replace={"ALPHA_THUMBPRINT": alpha.thumbprint, "BETA_THUMBPRINT": beta.thumbprint},
        )
        await fab.deploy(service)
        await fab.all_ready("secure", 2)
        endpoint = (await fab.view("secure")).endpoints[0]
        assert endpoint.protocol == "https"
        url = f"https://{endpoint.host}:{endpoint.port}/"

        async with httpx.AsyncClient(verify=trust, trust_env=False, timeout=10) as http:

            async def fetch(name: str) -> str:
                response = await http.get(
                    url, headers={"host": name, "connection": "close"}, extensions={"sni_hostname": name}
                )
                response.raise_for_status()
                return response.text

            # The https probe lets the instances in once W3WP answers through TLS.
            await fab.wait_until(lambda: _succeeds(fetch("alpha.test")), 60)
            for _ in range(4):  # both instances, round robin
                assert (await fetch("alpha.test")).startswith("alpha https")
                assert (await fetch("beta.test")).startswith("beta https")
            assert await presented(endpoint.port, "alpha.test") == der(alpha)
            assert await presented(endpoint.port, "beta.test") == der(beta)

            # Rotate Alpha's certificate by a configuration change while a client keeps making
            # new connections (each a new handshake, verified against the CA).
            served: list[str] = []
            done = anyio.Event()

            async def keep_asking() -> None:
                while not done.is_set():
                    served.append(await fetch("alpha.test"))

            rotated = (service / CONFIG).read_text().replace(alpha.thumbprint, alpha_next.thumbprint)
            async with anyio.create_task_group() as load:
                load.start_soon(keep_asking)
                await fab.call(
                    lambda c: c.change_configuration("secure", "production", rotated.encode(), CONFIG)
                )

                async def both_rotated() -> bool:
                    seen = {await presented(endpoint.port, "alpha.test") for _ in range(4)}
                    return seen == {der(alpha_next)}

                await fab.wait_until(both_rotated, 60)
                done.set()
            assert len(served) > 5 and all(text.startswith("alpha https") for text in served)
            assert all(i.restarts == 0 for i in await fab.instances("secure"))  # applied in place


async def _succeeds(call: object) -> bool:
    try:
        await call  # type: ignore[misc]
    except (httpx.HTTPError, ssl.SSLError):
        return False
    return True


async def test_a_limited_worker_serves_tls_itself_with_the_certificate_its_environment_names(
    tmp_path: Path,
) -> None:
    ca = make_ca()
    made = leaf(ca, "echo.test")
    async with running_fabric(tmp_path) as fab:
        async with fab.client() as client:
            await client.create_hosted_service("tlsworker")
            await client.add_certificate("tlsworker", pem_file(made), certificate_format="pem")
        replace = {"SSL_THUMBPRINT": made.thumbprint}
        await fab.deploy(copy_service(SERVICES / "tls-worker", tmp_path, replace=replace))
        await fab.all_ready("tlsworker", 1)
        endpoint = (await fab.view("tlsworker")).endpoints[0]

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

        assert await fab.wait_until(answered, 30) == b"Echo_IN_0"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="VM accounts need root")
async def test_an_elevated_certificate_key_is_out_of_a_limited_roles_reach(tmp_path: Path) -> None:
    made = leaf(make_ca(), "echo.test")
    async with running_fabric(tmp_path) as fab:
        async with fab.client() as client:
            await client.create_hosted_service("tlsworker")
            await client.add_certificate("tlsworker", pem_file(made), certificate_format="pem")
        service = copy_service(SERVICES / "tls-worker", tmp_path, replace={"SSL_THUMBPRINT": made.thumbprint})
        csdef = service / "ServiceDefinition.csdef"
        csdef.write_text(
            csdef.read_text().replace('storeName="My" />', 'storeName="My" permissionLevel="elevated" />')
        )
        await fab.deploy(service)

        def refused() -> bool:
            logs = (fab.state_dir / "vms").rglob("WaWorkerHost.out.log")
            return any("cannot read the key of certificate Ssl" in p.read_text() for p in logs)

        await fab.wait_until(refused, 60)
        key = next((fab.state_dir / "vms").rglob(f"{made.thumbprint}.key")).stat()
        assert (key.st_uid, key.st_gid, key.st_mode & 0o777) == (0, 0, 0o600)
