"""Serve a WebSpec's sites with hypercorn on the listening sockets the worker inherited."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any, cast

import anyio
from hypercorn.typing import AppWrapper

from ..http import serve_http, server_config
from .lifespan import site_lifespan
from .routing import EndpointRouter, RequestTracker, SiteDispatcher, make_handler
from .sites import LoadedSite, SiteKind, load_site
from .spec import SiteSpec, WebSpec, WebSpecError, check_web_spec, normalize_prefix
from .static import StaticFiles
from .tls import TlsContexts
from .types import ASGIApp, Handler
from .w3c import W3CLog

logger = logging.getLogger(__name__)


class LoadedSites:
    """Every folder of a WebSpec, imported: site -> (root, [(prefix, folder)])."""

    def __init__(self, spec: WebSpec) -> None:
        """Import each site's root folder and virtual applications; raises SiteLoadError."""
        self.roots: dict[str, LoadedSite] = {}
        self.mounts: dict[str, list[tuple[str, LoadedSite]]] = {}
        for site in spec.sites:
            self.roots[site.name] = load_site(site.physical_path)
            mounts = [(normalize_prefix(a.path), load_site(a.physical_path)) for a in site.applications]
            for directory in site.directories:
                folder = Path(directory.physical_path)
                if not folder.is_dir():
                    raise WebSpecError(
                        f"virtual directory {directory.path!r} of site {site.name!r}: folder "
                        f"{folder} does not exist; check its physicalDirectory"
                    )
                mounts.append(
                    (
                        normalize_prefix(directory.path),
                        LoadedSite(SiteKind.STATIC, folder, StaticFiles(folder)),
                    )
                )
            self.mounts[site.name] = mounts

    def asgi_apps(self) -> list[tuple[str, LoadedSite]]:
        """Return (label, site) for every ASGI application, to run their lifespans."""
        found = [(name, root) for name, root in self.roots.items()]
        found += [(f"{name}{prefix}", s) for name, ms in self.mounts.items() for prefix, s in ms]
        return [(label, site) for label, site in found if site.kind is SiteKind.ASGI]


def log_site_name(spec: WebSpec, site: SiteSpec) -> str:
    """Return a site's s-sitename in the access log: W3SVC<site_id + index>, as IIS numbers it."""
    return f"W3SVC{spec.site_id + site.index}"


def open_listeners(endpoints: Mapping[str, int]) -> dict[str, socket.socket]:
    """Wrap each endpoint's inherited fd in a socket of our own (a dup: the fd stays the caller's).

    Raises WebSpecError if an fd is not an open, listening TCP socket.
    """
    sockets: dict[str, socket.socket] = {}
    try:
        for name, fd in endpoints.items():
            try:
                sock = socket.socket(fileno=os.dup(fd))
            except OSError as error:
                raise WebSpecError(
                    f"endpoint {name!r}: fd {fd} is not an open socket ({error.strerror}); "
                    "pass the listening socket's fd with pass_fds"
                ) from error
            sockets[name] = sock
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if sock.type != socket.SOCK_STREAM or not listening:
                raise WebSpecError(
                    f"endpoint {name!r}: fd {fd} is not a listening TCP socket; call listen() first"
                )
            sock.setblocking(False)
    except BaseException:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


async def serve_sites(
    spec: WebSpec,
    *,
    shutdown_event: anyio.Event | None = None,
    tls: TlsContexts | None = None,
    task_status: anyio.abc.TaskStatus[dict[str, str]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve every site of `spec` until `shutdown_event` is set, idle timeout, or cancellation.

    Runs inside any anyio program (trio or asyncio), so WaWebHost can host sites in-process.
    Reports {endpoint name: "http://host:port"} through task_status once requests are served.
    On shutdown the listeners stop accepting (pending connections stay queued in the inherited
    sockets for the next worker), in-flight requests get `spec.graceful_timeout` seconds, then
    ASGI lifespans shut down and the access log is flushed.

    Raises WebSpecError for a spec that cannot be served, SiteLoadError for a site folder that
    fails to import, LifespanError for an ASGI app whose startup fails.

    The endpoints in ``spec.tls`` are served over TLS with ``tls`` (built from ``spec.tls``
    when not given; pass your own to change its certificates while it serves).
    """
    check_web_spec(spec)
    if spec.tls and tls is None:
        tls = await anyio.to_thread.run_sync(TlsContexts, spec.tls)
    loaded = LoadedSites(spec)
    for site_spec in spec.sites:
        root = loaded.roots[site_spec.name]
        bindings = ", ".join(f"{b.endpoint}:{b.host_header or '*'}" for b in site_spec.bindings)
        logger.info("site %s (%s) from %s on %s", site_spec.name, root.kind.value, root.folder, bindings)
    stop = shutdown_event or anyio.Event()
    tracker = RequestTracker()
    access_log = W3CLog(spec.log_dir)
    listeners = open_listeners(spec.endpoints)
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(access_log.run_flusher)
            async with AsyncExitStack() as lifespans:
                states: dict[int, dict[str, Any] | None] = {}
                for label, site in loaded.asgi_apps():
                    app = cast(ASGIApp, site.app)
                    states[id(site)] = await lifespans.enter_async_context(site_lifespan(app, label))
                routers = _build_routers(spec, loaded, states, access_log, tracker)
                binds: dict[str, str] = {}
                config = server_config(graceful_timeout=spec.graceful_timeout)
                async with anyio.create_task_group() as servers:
                    for name, router in routers.items():
                        # hypercorn's TypedDict-typed signature is the router's calling convention.
                        handler = cast(AppWrapper, router)
                        context = tls.listener_context(name) if tls is not None and name in tls else None
                        binds[name] = await servers.start(
                            partial(
                                serve_http,
                                handler,
                                listeners[name],
                                config,
                                shutdown_trigger=stop.wait,
                                ssl_context=context,
                            )
                        )
                    if spec.idle_timeout is not None:
                        servers.start_soon(_watch_idle, tracker, spec.idle_timeout, stop)
                    task_status.started(binds)
                    await stop.wait()
            tasks.cancel_scope.cancel()  # only the flusher is left; it flushes once more
    finally:
        access_log.flush()
        for sock in listeners.values():
            sock.close()


def _build_routers(
    spec: WebSpec,
    loaded: LoadedSites,
    states: Mapping[int, dict[str, Any] | None],
    access_log: W3CLog,
    tracker: RequestTracker,
) -> dict[str, EndpointRouter]:
    def handler(site: LoadedSite) -> Handler:
        return make_handler(site, states.get(id(site)))

    bound: dict[str, dict[str, tuple[str, SiteDispatcher]]] = {name: {} for name in spec.endpoints}
    for site in spec.sites:
        dispatcher = SiteDispatcher(
            handler(loaded.roots[site.name]),
            [(prefix, handler(mounted)) for prefix, mounted in loaded.mounts[site.name]],
        )
        for binding in site.bindings:
            bound[binding.endpoint][binding.host_header] = (log_site_name(spec, site), dispatcher)
    return {
        name: EndpointRouter(name, sites, access_log=access_log, tracker=tracker)
        for name, sites in bound.items()
    }


async def _watch_idle(tracker: RequestTracker, idle_timeout: float, stop: anyio.Event) -> None:
    while not stop.is_set():
        now = anyio.current_time()
        quiet_until = tracker.last_activity + idle_timeout
        if tracker.in_flight == 0 and now >= quiet_until:
            logger.info("no request for %g s: shutting down", idle_timeout)
            stop.set()
            return
        # A running request pushes last_activity forward when it ends; look again after that,
        # unless a stop comes first (the servers then end, and so must this watcher).
        with anyio.move_on_after(max(quiet_until - now, min(idle_timeout, 1.0))):
            await stop.wait()
