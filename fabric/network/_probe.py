"""LoadBalancerProbe: checking an instance's health by TCP connect, or HTTP GET (over TLS for https)."""

from __future__ import annotations

import ssl

import anyio
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from ._model import ProbeSpec
from ._pool import Entry, Pool

_MAX_STATUS_LINE = 8192


def _probe_tls() -> ssl.SSLContext:
    """An https probe checks through TLS but trusts any certificate, as Azure's does: it asks
    whether the instance serves, not who it is (clients check that)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_PROBE_TLS = _probe_tls()


def probe_target(probe: ProbeSpec, entry: Entry) -> tuple[str, int]:
    """Where ``entry``'s probe is sent: its probe_port, else the probe's, else its own."""
    backend = entry.backend
    return backend.host, backend.probe_port or probe.port or backend.port


async def probe_once(probe: ProbeSpec, host: str, port: int) -> bool:
    """One probe: True if it passes within the probe's interval (and timeout)."""
    with anyio.move_on_after(min(probe.interval, probe.timeout)):
        try:
            stream: ByteStream = await anyio.connect_tcp(host, port)
        except OSError:
            return False
        if probe.protocol == "https":
            raw = stream
            try:
                stream = await TLSStream.wrap(
                    raw, server_side=False, ssl_context=_PROBE_TLS, standard_compatible=False
                )
            except (OSError, ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream):
                await raw.aclose()
                return False
        async with stream:
            if probe.protocol == "tcp":
                return True
            request = (
                f"GET {probe.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "User-Agent: Load Balancer Agent\r\nConnection: close\r\n\r\n"
            )
            try:
                await stream.send(request.encode("latin-1"))
                head = b""
                while b"\r\n" not in head and len(head) < _MAX_STATUS_LINE:
                    head += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return False
            # Azure counts only 200 OK as healthy.
            parts = head.split(b"\r\n", 1)[0].split()
            return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"200"
    return False


async def probe_loop(pool: Pool, entry: Entry, probe: ProbeSpec) -> None:
    """Probe ``entry`` every interval until cancelled, telling ``pool`` each verdict.

    A pass brings the instance into rotation at once. A failure takes it out as soon
    as no probe can pass within ``probe.timeout`` of the last pass (with Azure's 15 s
    and 31 s, on the second failure in a row).
    """
    last_pass = anyio.current_time()
    while True:
        started = anyio.current_time()
        ok = await probe_once(probe, *probe_target(probe, entry))
        now = anyio.current_time()
        if ok:
            last_pass = now
            pool.probe_result(entry, True)
        elif entry.probe_ok and now + probe.interval - last_pass > probe.timeout:
            pool.probe_result(entry, False)
        await anyio.sleep_until(started + probe.interval)
