"""hypercorn on trio with a bound on the connections served at once (hypercorn has none).

hypercorn's own trio server (``hypercorn.trio.run.worker_serve``) accepts every connection and
serves it until its idle or header deadline: a fast flood of connections to an address on the
network holds one descriptor each, and can run the serving process out of them (and with it
everything else that process holds). :func:`serve_bounded` is that server with its accept
loop replaced: past ``ConnectionGate.limit`` connections a new one is closed as soon as it is
accepted, logged once every ``LOG_EVERY`` seconds. The rest (lifespan, the per-connection
TCPServer, the graceful stop) is hypercorn's.
"""

from __future__ import annotations

import errno
import logging
import math
import resource
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from hypercorn.config import Config, Sockets
    from hypercorn.typing import AppWrapper

logger = logging.getLogger(__name__)

#: a refused connection is logged at most once in this many seconds (a flood is one line)
LOG_EVERY = 10.0
#: accept() failures that mean "out of resources for now", not "listener broken"
_ACCEPT_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def default_limit() -> int:
    """Connections one server may hold: a sixteenth of RLIMIT_NOFILE (64 to 4,096), so a flood
    leaves the process most of its descriptors for its links, stores and balancers."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 4096 if soft == resource.RLIM_INFINITY else min(4096, max(64, soft // 16))


@dataclass
class ConnectionGate:
    """Counts the connections a server holds and refuses one past ``limit``."""

    limit: int
    #: what the log line calls the server ("the API at http://...")
    name: str = "the server"
    #: connections held now
    open: int = 0
    #: connections closed at once since the start
    refused: int = 0
    _logged: float = field(default=-math.inf, init=False)

    def enter(self, peer: str) -> bool:
        """Take a place for a new connection from ``peer``; False (logged) when none is left."""
        if self.open < self.limit:
            self.open += 1
            return True
        self.refused += 1
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY:
            self._logged = now
            logger.warning(
                "%s serves %d connections already: closing the one from %s (and more, for %g s)",
                self.name,
                self.open,
                peer,
                LOG_EVERY,
            )
        return False

    def leave(self) -> None:
        """A connection ended."""
        self.open -= 1


def _peer(stream: trio.SocketStream) -> str:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "?"
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


async def serve_bounded(
    app: AppWrapper,
    config: Config,
    gate: ConnectionGate,
    *,
    sockets: Sockets,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's trio worker_serve on ``sockets`` (listening), holding at most ``gate.limit``
    connections; stops gracefully when ``shutdown_trigger`` returns."""
    from hypercorn.trio.lifespan import Lifespan
    from hypercorn.trio.statsd import StatsdLogger
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState, LifespanState
    from hypercorn.utils import ShutdownError, raise_shutdown

    config.set_statsd_logger_class(StatsdLogger)
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(app, config, lifespan_state)
    context = WorkerContext(None)
    tls: ssl.SSLContext | None = config.create_ssl_context() if sockets.secure_sockets else None

    async def serve_one(stream: trio.SocketStream) -> None:
        try:
            served: Any = stream
            if tls is not None:  # the handshake is TCPServer's, under its own deadline
                served = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
            await TCPServer(app, config, context, ConnectionState(lifespan_state.copy()), served)
        finally:
            gate.leave()

    async def accept(listener: trio.SocketListener, handlers: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_TRANSIENT:
                    raise
                logger.warning("%s cannot accept now (%s): retrying in 0.1 s", gate.name, exc.strerror)
                await trio.sleep(0.1)
                continue
            if gate.enter(_peer(stream)):
                handlers.start_soon(serve_one, stream)
            else:
                await stream.aclose()  # no task, no request read: the descriptor goes back now

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            listeners = [
                trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]
            ]
            task_status.started()
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    for listener in listeners:
                        nursery.start_soon(accept, listener, server_nursery)
            except BaseExceptionGroup as error:
                _, others = error.split((ShutdownError, KeyboardInterrupt))
                if others is not None:
                    raise others from None
            finally:
                for listener in listeners:
                    listener.socket.close()  # no new connection while the others drain
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
