"""Route each request to its site by Host header, then to a virtual application by path prefix.

Every HTTP request and WebSocket handshake is written to the access log once it ends, including
404s for unknown hosts and 500s from applications that raised, and counted by a RequestTracker
so the worker can tell when it has been idle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import anyio
from hypercorn.app_wrappers import WSGIWrapper

from ..http import answer_lifespan
from .sites import LoadedSite, SiteKind
from .spec import host_key
from .static import send_error_page
from .types import ASGIApp, CallSoon, Handler, Message, Receive, Scope, Send, SyncSpawn
from .w3c import AccessRecord, W3CLog

WSGI_MAX_BODY_SIZE = 16 * 1024 * 1024


class RequestTracker:
    """Counts requests in flight and remembers when the last one started or ended."""

    def __init__(self) -> None:
        """Start idle, as of now."""
        self.in_flight = 0
        self.served = 0
        self.last_activity = anyio.current_time()

    def begin(self) -> None:
        """Note that a request started."""
        self.in_flight += 1
        self.last_activity = anyio.current_time()

    def end(self) -> None:
        """Note that a request ended."""
        self.in_flight -= 1
        self.served += 1
        self.last_activity = anyio.current_time()


def make_handler(site: LoadedSite, state: Mapping[str, Any] | None = None) -> Handler:
    """Return the handler serving a loaded site folder.

    `state` is the site's ASGI lifespan state; each request scope gets a shallow copy of it.
    """
    if site.kind is SiteKind.WSGI:
        # hypercorn's TypedDict-typed signature is the same calling convention as Handler.
        return cast(Handler, WSGIWrapper(site.app, WSGI_MAX_BODY_SIZE))
    app: ASGIApp = site.app

    async def handle(
        scope: Scope, receive: Receive, send: Send, sync_spawn: SyncSpawn, call_soon: CallSoon
    ) -> None:
        if state is not None:
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return handle


class SiteDispatcher:
    """One site: its root application plus applications mounted under path prefixes."""

    def __init__(self, root: Handler, mounts: Sequence[tuple[str, Handler]] = ()) -> None:
        """Serve `root`, and each (prefix, handler) in `mounts` under its "/prefix"."""
        self.root = root
        # Longest prefix first, compared case-insensitively as IIS compares URL paths.
        self.mounts = sorted(((p.lower(), h) for p, h in mounts), key=lambda m: -len(m[0]))

    def route(self, scope: Scope) -> tuple[Handler, Scope]:
        """Return the handler for a request and its scope, with root_path set for a mount."""
        root_path: str = scope.get("root_path", "")
        path: str = scope["path"]
        relative = path[len(root_path) :] if path.startswith(root_path) else path
        for prefix, handler in self.mounts:
            size = len(prefix)
            if relative[:size].lower() == prefix and relative[size : size + 1] in {"", "/"}:
                # ASGI keeps the full path and names the mount in root_path (as hypercorn's
                # WSGI adapter and Starlette expect); the request's own spelling is kept.
                return handler, {**scope, "root_path": root_path + relative[:size]}
        return self.root, scope

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, sync_spawn: SyncSpawn, call_soon: CallSoon
    ) -> None:
        """Serve one request with the application its path belongs to."""
        handler, scope = self.route(scope)
        await handler(scope, receive, send, sync_spawn, call_soon)


class EndpointRouter:
    """The handler of one endpoint's listening socket: picks the site by Host header.

    `sites` maps a binding's host header ("" for any host) to (log site name, site). A request
    whose host matches no binding goes to the "" binding, else gets 404 naming the host.
    """

    def __init__(
        self,
        endpoint: str,
        sites: Mapping[str, tuple[str, SiteDispatcher]],
        *,
        access_log: W3CLog | None = None,
        tracker: RequestTracker | None = None,
    ) -> None:
        """Route requests arriving on `endpoint`; log them to `access_log`, count in `tracker`."""
        self.endpoint = endpoint
        self.sites = {host_key(host): site for host, site in sites.items()}
        self.access_log = access_log
        self.tracker = tracker

    def find_site(self, host: str) -> tuple[str, SiteDispatcher] | None:
        """Return the (log name, site) bound to a Host header value, or None."""
        return self.sites.get(host_key(host)) or self.sites.get("")

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, sync_spawn: SyncSpawn, call_soon: CallSoon
    ) -> None:
        """Serve one connection scope (lifespan is answered here: sites run their own)."""
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        host = _header(scope, b"host")
        found = self.find_site(host)
        outcome = _Outcome(send, websocket=scope["type"] == "websocket")
        started = anyio.current_time()
        if self.tracker is not None:
            self.tracker.begin()
        try:
            if found is None:
                outcome.site_name = ""
                await self._not_found(scope, host, outcome.send)
            else:
                outcome.site_name = found[0]
                await found[1](scope, receive, outcome.send, sync_spawn, call_soon)
        except BaseException:
            outcome.failed = True
            raise
        finally:
            if self.tracker is not None:
                self.tracker.end()
            if self.access_log is not None:
                elapsed = anyio.current_time() - started
                self.access_log.log(_record(scope, outcome, elapsed))

    async def _not_found(self, scope: Scope, host: str, send: Send) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        shown = host or "(no Host header)"
        await send_error_page(
            send,
            404,
            f"Site not found: no site is bound to host {shown!r} on endpoint {self.endpoint!r}",
        )


class _Outcome:
    """Watches what an application sends, to log the status it answered with."""

    def __init__(self, send: Send, *, websocket: bool) -> None:
        self._send = send
        self.websocket = websocket
        self.status: int | None = None
        self.failed = False
        self.site_name = ""

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.status is None:
            if kind in {"http.response.start", "websocket.http.response.start"}:
                self.status = int(message["status"])
            elif kind == "websocket.accept":
                self.status = 101
            elif kind == "websocket.close":
                self.status = 403  # a handshake refused before accept, as hypercorn answers it
        await self._send(message)

    def final_status(self) -> int:
        if self.status is not None:
            return self.status
        # Nothing was sent: hypercorn answers 500 for a failed or silent HTTP app.
        return 403 if self.websocket and not self.failed else 500


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _record(scope: Scope, outcome: _Outcome, elapsed: float) -> AccessRecord:
    server = scope.get("server") or ("", 0)
    client = scope.get("client") or ("", 0)
    return AccessRecord(
        when=datetime.now(UTC),
        site_name=outcome.site_name,
        server_ip=str(server[0]),
        server_port=int(server[1] or 0),
        method=scope.get("method", "GET"),
        uri_stem=scope["path"],
        uri_query=bytes(scope.get("query_string", b"")).decode("latin-1"),
        client_ip=str(client[0]),
        user_agent=_header(scope, b"user-agent"),
        referer=_header(scope, b"referer"),
        status=outcome.final_status(),
        time_taken_ms=max(0, round(elapsed * 1000)),
    )
