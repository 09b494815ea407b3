"""HTTPS in the web core: TLS on an endpoint, the certificate picked by SNI for each of two
sites bound by host header, and certificates changed while serving without a dropped request."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import anyio
import httpx

from fabric.certs import ParsedCertificate
from roles.hosts._web import BindingSpec, CertificateSpec, SiteSpec, TlsContexts, TlsEndpointSpec, serve_sites
from tests.fabric.certs.cert_kit import leaf, make_ca


def write(parsed: ParsedCertificate, folder: Path, name: str) -> CertificateSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.pem").write_text(parsed.certificate_pem())
    (folder / f"{name}.key").write_bytes(parsed.key_pem())
    return CertificateSpec(str(folder / f"{name}.pem"), str(folder / f"{name}.key"))


def trusting(ca: ParsedCertificate) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.certificate_pem())
    return context


async def peer_certificate(port: int, server_name: str | None) -> bytes:
    """The DER certificate the server presents to a handshake with this SNI name (unverified)."""

    def handshake() -> bytes:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der

    return await anyio.to_thread.run_sync(handshake)


def der(parsed: ParsedCertificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return parsed.certificate.public_bytes(Encoding.DER)


async def test_two_sites_on_one_https_endpoint_each_present_their_certificate(
    web, listener, tmp_path: Path
) -> None:
    ca = make_ca()
    alpha, beta = leaf(ca, "alpha.test"), leaf(ca, "beta.test")
    store = tmp_path / "Certificates"
    tls = {"HttpsIn": TlsEndpointSpec(write(alpha, store, "alpha"), (write(beta, store, "beta"),))}
    sites = [
        SiteSpec(
            "Alpha", 0, str(web.asgi_site(tmp_path / "a", "alpha")), (BindingSpec("HttpsIn", "alpha.test"),)
        ),
        SiteSpec(
            "Beta", 1, str(web.asgi_site(tmp_path / "b", "beta")), (BindingSpec("HttpsIn", "beta.test"),)
        ),
    ]
    spec = web.spec(sites, {"HttpsIn": listener.fileno()}, tls=tls)
    port = listener.getsockname()[1]
    async with web.serving(spec) as binds:
        assert binds["HttpsIn"] == f"https://127.0.0.1:{port}"
        async with httpx.AsyncClient(verify=trusting(ca), trust_env=False, timeout=10) as http:
            for name, site in (("alpha.test", "alpha"), ("beta.test", "beta")):
                # Verified against the test CA for the name sent by SNI: the wrong certificate fails.
                response = await http.get(
                    f"https://127.0.0.1:{port}/", headers={"host": name}, extensions={"sni_hostname": name}
                )
                assert response.json()["site"] == site
        assert await peer_certificate(port, "beta.test") == der(beta)
        assert await peer_certificate(port, "ALPHA.test") == der(alpha)
        assert await peer_certificate(port, None) == der(alpha)  # no SNI: the endpoint's own
        assert await peer_certificate(port, "other.test") == der(alpha)


async def test_new_certificates_serve_the_next_handshakes_and_open_connections_go_on(
    web, listener, tmp_path: Path
) -> None:
    ca = make_ca()
    old, new = leaf(ca, "alpha.test"), leaf(ca, "alpha.test")
    store = tmp_path / "Certificates"
    spec = web.one_site(web.asgi_site(tmp_path / "a", "alpha"), listener)
    spec = web.spec(
        [SiteSpec("Web", 0, spec.sites[0].physical_path, (BindingSpec("HttpsIn"),))],
        {"HttpsIn": listener.fileno()},
        tls={"HttpsIn": TlsEndpointSpec(write(old, store, "old"))},
    )
    port = listener.getsockname()[1]
    contexts = await anyio.to_thread.run_sync(TlsContexts, spec.tls)
    stop = anyio.Event()
    async with anyio.create_task_group() as tasks:
        await tasks.start(
            lambda task_status: serve_sites(spec, shutdown_event=stop, tls=contexts, task_status=task_status)
        )
        async with httpx.AsyncClient(verify=trusting(ca), trust_env=False, timeout=10) as http:
            url = f"https://127.0.0.1:{port}/"
            sni = {"sni_hostname": "alpha.test"}
            assert (await http.get(url, extensions=sni)).status_code == 200
            assert await peer_certificate(port, "alpha.test") == der(old)
            await anyio.to_thread.run_sync(
                contexts.reload, {"HttpsIn": TlsEndpointSpec(write(new, store, "new"))}
            )
            assert (await http.get(url, extensions=sni)).status_code == 200  # the kept-alive connection
            assert await peer_certificate(port, "alpha.test") == der(new)
            assert await peer_certificate(port, None) == der(new)
        stop.set()
