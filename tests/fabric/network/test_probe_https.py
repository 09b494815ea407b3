"""An https LoadBalancerProbe checks through TLS: a 200 over TLS passes; the same page served
without TLS, or a TLS server answering 503, fails."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import SocketStream
from anyio.streams.tls import TLSListener

from fabric.network import ProbeSpec
from fabric.network._probe import probe_once
from tests.fabric.certs.cert_kit import leaf, make_ca

PROBE = ProbeSpec("https", 0, "/health", interval=5.0, timeout=11.0)


@asynccontextmanager
async def health_page(status: int, tls: ssl.SSLContext | None) -> AsyncIterator[int]:
    """A page on 127.0.0.1 answering `status` to any request, over TLS when given; its port."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    served = TLSListener(listener, tls, standard_compatible=False) if tls else listener

    async def answer(stream: SocketStream) -> None:
        async with stream:
            try:
                await stream.receive()
                await stream.send(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            except (anyio.BrokenResourceError, anyio.EndOfStream, ssl.SSLError, OSError):
                pass

    async with served, anyio.create_task_group() as tasks:
        tasks.start_soon(served.serve, answer)
        yield port
        tasks.cancel_scope.cancel()


def server_tls(tmp_path: Path) -> ssl.SSLContext:
    made = leaf(make_ca(), "probe.test")
    (tmp_path / "c.pem").write_text(made.certificate_pem())
    (tmp_path / "c.key").write_bytes(made.key_pem())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "c.key")
    return context


async def test_an_https_probe_passes_on_200_over_tls_only(tmp_path: Path) -> None:
    tls = server_tls(tmp_path)
    async with health_page(200, tls) as port:
        assert await probe_once(PROBE, "127.0.0.1", port)
    async with health_page(503, tls) as port:
        assert not await probe_once(PROBE, "127.0.0.1", port)
    async with health_page(200, None) as port:  # the page, but no TLS: not what was asked
        assert not await probe_once(PROBE, "127.0.0.1", port)
