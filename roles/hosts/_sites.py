"""Serving a role's sites inside a role host process (WaWebHost and W3WP) with the web core."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final
from urllib.parse import urlsplit

import anyio
import anyio.abc

from roles.protocol import RoleEnvironmentData, RoleHostConfig

from ._web import (
    BindingSpec,
    CertificateSpec,
    SiteSpec,
    TlsContexts,
    TlsEndpointSpec,
    VirtualApplicationSpec,
    WebSpec,
    WebSpecError,
    serve_sites,
)

#: The request HWC sends itself once the role is ready, so the first user is not the one who
#: pays for the site's warm-up.
WARM_UP_PATH: Final = "/do.rd_runtime_init"

logger = logging.getLogger("roles.hosts.sites")


def web_spec(config: RoleHostConfig, *, idle_timeout: float | None) -> WebSpec:
    """Return the WebSpec serving ``config.sites`` on ``config.listen_fds``.

    Raises:
        WebSpecError: the config names no sites or no W3SVC log folder.
    """
    if not config.sites:
        raise WebSpecError(f"the {config.kind} host was given no sites; a web role needs at least one")
    if not config.web_log_dir:
        raise WebSpecError(f"the {config.kind} host was given no web_log_dir for its W3SVC log")
    sites = tuple(
        SiteSpec(
            name=site.name,
            index=site.index,
            physical_path=site.physical_path,
            bindings=tuple(BindingSpec(b.endpoint_name, b.host_header, b.name) for b in site.bindings),
            applications=tuple(
                VirtualApplicationSpec(path, folder) for path, folder in site.virtual_applications.items()
            ),
        )
        for site in config.sites
    )
    return WebSpec(
        sites,
        dict(config.listen_fds),
        config.web_log_dir,
        idle_timeout=idle_timeout,
        graceful_timeout=config.graceful_timeout,
        tls=tls_specs(config.environment, config.listen_fds),
    )


def tls_specs(environment: RoleEnvironmentData, endpoints: Iterable[str]) -> dict[str, TlsEndpointSpec]:
    """The TLS of each https endpoint among ``endpoints``: the certificate its InputEndpoint
    names by default, the role's other certificates for SNI names they cover.

    Raises:
        WebSpecError: an https endpoint whose certificate is not installed.
    """
    certificates = environment.certificates
    found: dict[str, TlsEndpointSpec] = {}
    for name in endpoints:
        endpoint = environment.current_instance.endpoints.get(name)
        if endpoint is None or endpoint.protocol != "https":
            continue
        default = certificates.get(endpoint.certificate)
        if default is None:
            raise WebSpecError(
                f"https endpoint {name!r} serves certificate {endpoint.certificate!r}, which the role "
                f"does not have (its certificates: {', '.join(sorted(certificates)) or 'none'})"
            )
        others = [c for n, c in sorted(certificates.items()) if n != endpoint.certificate]
        found[name] = TlsEndpointSpec(
            CertificateSpec(default.path, default.key_path),
            tuple(CertificateSpec(c.path, c.key_path) for c in others),
        )
    return found


class _Started:
    """Forwards task_status.started and remembers that it happened."""

    def __init__(self, inner: anyio.abc.TaskStatus[dict[str, str]]) -> None:
        self.inner = inner
        self.done = False

    def started(self, value: dict[str, str] | None = None) -> None:
        self.done = True
        self.inner.started(value or {})


class SiteServer:
    """One run of serve_sites in a role host: start it, stop it gracefully, know when it ended."""

    def __init__(self, spec: WebSpec) -> None:
        """Prepare to serve ``spec``."""
        self.spec = spec
        self.shutdown = anyio.Event()
        self.done = anyio.Event()
        self.binds: dict[str, str] = {}
        self.tls: TlsContexts | None = None
        self._scope = anyio.CancelScope()

    async def serve(
        self,
        on_error: Callable[[BaseException], Awaitable[None]],
        *,
        task_status: anyio.abc.TaskStatus[dict[str, str]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until ``shutdown`` is set or the idle timeout; report the bound URLs.

        An error before the sites serve is raised to the caller of ``start``; one afterwards
        goes to ``on_error``.
        """
        status = _Started(task_status)
        try:
            with self._scope:
                if self.spec.tls:
                    self.tls = await anyio.to_thread.run_sync(TlsContexts, self.spec.tls)
                await serve_sites(self.spec, shutdown_event=self.shutdown, tls=self.tls, task_status=status)
        except Exception as error:
            if not status.done:
                raise
            await on_error(error)
        finally:
            self.done.set()

    async def reload_tls(self, specs: Mapping[str, TlsEndpointSpec]) -> None:
        """Serve the next TLS handshakes with these certificates (connections open keep theirs).

        Raises:
            WebSpecError: a certificate cannot be loaded; the old ones stay in force.
        """
        if self.tls is not None:
            await anyio.to_thread.run_sync(self.tls.reload, specs)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (graceful_timeout), wait for the end.

        Whatever still runs after graceful_timeout (plus a moment for lifespans and the log)
        is cancelled: by then hypercorn has cut the requests in flight anyway, and the web
        core's idle watcher may otherwise sleep on for up to its idle_timeout.
        """
        self.shutdown.set()
        with anyio.move_on_after(self.spec.graceful_timeout + 1.0):
            await self.done.wait()
        if not self.done.is_set():
            logger.warning("the sites did not stop within %g s: cancelling them", self.spec.graceful_timeout)
            self._scope.cancel()
            await self.done.wait()


async def warm_up(spec: WebSpec, binds: dict[str, str], timeout: float = 10.0) -> str:
    """Send GET /do.rd_runtime_init to the first site's first binding; return the status line."""
    site = spec.sites[0]
    binding = site.bindings[0]
    url = urlsplit(binds[binding.endpoint])
    host = url.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    port = url.port or 80
    request = (
        f"GET {WARM_UP_PATH} HTTP/1.1\r\nHost: {binding.host_header or host}\r\n"
        "User-Agent: reddog-hwc-warmup\r\nConnection: close\r\n\r\n"
    ).encode()
    chunks: list[bytes] = []
    with anyio.fail_after(timeout):
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(request)
            try:
                async for chunk in stream:
                    chunks.append(chunk)
            except anyio.EndOfStream:
                pass
    return b"".join(chunks).split(b"\r\n", 1)[0].decode("latin-1")
