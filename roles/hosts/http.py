"""Serve HTTP with hypercorn on a listening socket, on trio or asyncio: the one way reddog does it.

The fabric's API (RDFE) and the web role hosts (W3WP, WaWebHost) all serve through
``serve_http``; an application with nothing to start or stop answers hypercorn's lifespan
events with ``answer_lifespan``. This module sits in ``roles`` because that is the lowest layer
that serves HTTP (``fabric`` may import ``roles``, not the other way round).
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio.abc import TaskStatus

from actors import current_backend

if TYPE_CHECKING:
    from hypercorn.config import Config
    from hypercorn.typing import AppWrapper, ASGIFramework

    from roles.hosts.http_bounded import ConnectionGate

# hypercorn is imported where it is used: the fabric's CLI imports the API's module (for its
# client) and should not pay for a server it does not run.
#: What serving imports of hypercorn's: a process template that will fork servers (a web
#: role's role host template) imports these first, so that a role host does not import them
#: after its start (~60 ms, more on a loaded machine).
SERVER_MODULES = ("hypercorn.config", "hypercorn.app_wrappers", "hypercorn.utils", "hypercorn.trio.run")

logger = logging.getLogger(__name__)

#: Past the graceful drain of requests in flight (Config.graceful_timeout), how long the server
#: may take to close its listener and run the lifespan shutdown before it is cancelled.
CLOSE_GRACE = 5.0
#: Seconds a client gets to finish its TLS handshake before its connection is closed.
TLS_HANDSHAKE_SECONDS = 10.0


def server_config(*, graceful_timeout: float) -> Config:
    """The hypercorn Config reddog serves with: no access log, Server header or stderr handler
    of hypercorn's own; on shutdown, requests in flight get `graceful_timeout` seconds."""
    from hypercorn.config import Config

    config = Config()
    config.graceful_timeout = graceful_timeout
    config.accesslog = None  # each server keeps its own (the W3C log of a web role)
    # A Logger (not "-") keeps hypercorn from adding its own stderr handler: messages go
    # through the program's logging setup, once.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    # hypercorn waits 60 s for a TLS handshake: a client speaking plain HTTP to an HTTPS port, or
    # one that says nothing, would hold a connection (and a slot of the server's cap) that long.
    config.ssl_handshake_timeout = TLS_HANDSHAKE_SECONDS
    return config


def asgi_handler(app: Callable[[Any, Any, Any], Awaitable[None]]) -> AppWrapper:
    """Wrap a plain ASGI 3 application in hypercorn's calling convention, for serve_http."""
    from hypercorn.app_wrappers import ASGIWrapper

    # ASGI's loose dicts against hypercorn's TypedDicts: the calling convention is the same.
    return ASGIWrapper(cast("ASGIFramework", app))


async def answer_lifespan(
    receive: Callable[[], Awaitable[Mapping[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Answer the ASGI lifespan protocol for an application with nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def socket_url(sock: socket.socket, scheme: str = "http") -> str:
    """The http:// (or https://) URL of a bound socket ("http://[::1]:8080" for IPv6)."""
    from hypercorn.utils import repr_socket_addr

    return f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}"


def tls_config(config: Config, context: ssl.SSLContext) -> Config:
    """A copy of `config` whose TLS is `context` (hypercorn builds its own from file names
    otherwise; ours picks a certificate per handshake by SNI and can change certificates)."""
    from hypercorn.config import Config as HypercornConfig

    class _TlsConfig(HypercornConfig):
        @property
        def ssl_enabled(self) -> bool:
            return True

        def create_ssl_context(self) -> ssl.SSLContext:
            return context

    copy = _TlsConfig()
    copy.__dict__.update(config.__dict__)
    return copy


async def serve_http(
    app: AppWrapper,
    sock: socket.socket,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    gate: ConnectionGate | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on the listening socket `sock` until `shutdown_trigger` returns or the caller
    is cancelled, on whichever anyio backend runs it.

    `app` follows hypercorn's calling convention (ASGI's three arguments, then sync_spawn and
    call_soon for WSGI code); wrap a plain ASGI application with ``asgi_handler``. Reports the
    server's URL through `task_status` once it accepts connections (on asyncio, hypercorn has no
    readiness report: at once, as the socket already listens and connections wait in its
    backlog). Both ways of stopping are the same graceful stop: the listener closes, requests in
    flight get ``config.graceful_timeout`` seconds, then the lifespan shuts down. That stop is
    shielded from the caller's cancellation (hypercorn's asyncio server breaks when cancelled)
    and bounded by graceful_timeout + CLOSE_GRACE, after which the server is cancelled.
    `sock` stays the caller's: hypercorn serves, and closes, a duplicate. With `ssl_context`,
    every connection is TLS, wrapped with that context (the URL is then https://). With `gate`,
    at most ``gate.limit`` connections are held at once and one past that is closed as soon as
    it is accepted (``roles.hosts.http_bounded``): for a server on the network. That is on trio
    only (``fabric serve`` runs trio); on asyncio the gate is not applied.
    """
    from hypercorn.config import Sockets

    url = socket_url(sock, "https" if ssl_context is not None else "http")
    if ssl_context is not None:
        config = tls_config(config, ssl_context)
        sockets = Sockets(secure_sockets=[sock.dup()], insecure_sockets=[], quic_sockets=[])
    else:
        sockets = Sockets(secure_sockets=[], insecure_sockets=[sock.dup()], quic_sockets=[])
    stop = anyio.Event()
    accepting = anyio.Event()
    # Shielded, so that cancelling the caller stops the server through its shutdown trigger;
    # its deadline is set once the stop begins.
    server_scope = anyio.CancelScope(shield=True)

    async def run_server() -> None:
        try:
            with server_scope:
                if gate is not None and current_backend() == "trio":
                    from roles.hosts.http_bounded import serve_bounded

                    async with anyio.create_task_group() as server:
                        bounded = partial(serve_bounded, sockets=sockets, shutdown_trigger=stop.wait)
                        await server.start(bounded, app, config, gate)
                        accepting.set()
                elif current_backend() == "trio":
                    from hypercorn.trio.run import worker_serve as trio_serve

                    async with anyio.create_task_group() as server:
                        await server.start(
                            partial(trio_serve, app, config, sockets=sockets, shutdown_trigger=stop.wait)
                        )
                        accepting.set()
                else:
                    from hypercorn.asyncio.run import worker_serve as asyncio_serve

                    accepting.set()
                    await asyncio_serve(app, config, sockets=sockets, shutdown_trigger=stop.wait)
        finally:
            # (cancel_called, not cancelled_caught: when the caller was cancelled too, the
            # cancellation goes on to the caller's scope rather than stopping at this one.)
            if server_scope.cancel_called:
                logger.warning(
                    "the server on %s did not stop within %g s: cancelled it",
                    url,
                    config.graceful_timeout + CLOSE_GRACE,
                )
        serving.cancel_scope.cancel()  # it ended by itself: so does the wait for a trigger

    try:
        async with anyio.create_task_group() as serving:
            serving.start_soon(run_server)
            try:
                await accepting.wait()
                task_status.started(url)
                if shutdown_trigger is None:
                    await anyio.sleep_forever()
                else:
                    await shutdown_trigger()
            finally:
                stop.set()
                server_scope.deadline = anyio.current_time() + config.graceful_timeout + CLOSE_GRACE
    finally:
        for served in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            served.close()  # hypercorn closed it already, unless it failed to start
