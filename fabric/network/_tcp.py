"""TCP balancing: accept clients, connect each to an instance in rotation, pump bytes."""

from __future__ import annotations

import errno
import itertools
import logging
import math
import random
import socket
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from . import _sock
from ._conn import Conn, Flow, pump, pump_plain
from ._descriptors import descriptor_share
from ._errors import ToxicsUnsupportedError, UnknownToxicError
from ._lane import attach, detach
from ._pool import Entry, Pool
from .toxics import Toxic

log = logging.getLogger("fabric.network")

# accept() failures that mean "out of resources for now", not "listener broken".
_ACCEPT_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

#: Seconds a client may wait for an instance to enter rotation when none is in it.
QUEUE_TIMEOUT = 5.0


#: user-space client connections every balancer of this process holds at once, each with two
#: descriptors: past it a new client is reset at once, so that a flood through the balancers
#: (a role of this machine can open connections to any endpoint) leaves the process half its
#: descriptors for everything else (its API, links, stores, logs)
MAX_OPEN = descriptor_share(4, floor=64, unlimited=65536)
_held = 0
_said_full = -math.inf

Pump = Callable[[socket.socket, Flow], Coroutine[Any, Any, None]]
#: seconds between attempts to listen on a shared port another socket holds unshared
LISTEN_RETRY = 1.0


async def _listen_when_free(name: str, listener: socket.socket) -> None:
    """Listen on a socket bound to a shared port (SO_REUSEPORT), once no other socket of the
    machine listens there unshared (EADDRINUSE: bound after ours, it listened first). Retried,
    not raised: the error took the whole controller down with it (its deployments hung)."""
    warned = False
    while True:
        try:
            listener.listen(_sock.BACKLOG)
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            if not warned:
                log.warning(
                    "endpoint %s: its port %s is taken; listening once it is free",
                    name,
                    listener.getsockname()[1],
                )
                warned = True
        await anyio.sleep(LISTEN_RETRY)


def _count(change: int) -> None:
    global _held
    _held += change


class Counters:
    """Endpoint-wide counters of client connections."""

    __slots__ = ("connections", "refused", "rejected")

    def __init__(self) -> None:
        self.connections = 0
        self.refused = 0
        self.rejected = 0


class TcpBalancer:
    """Spreads client connections of one endpoint over the pool's rotation."""

    def __init__(
        self,
        name: str,
        pool: Pool,
        *,
        toxics: bool = True,
        connect_timeout: float = 5.0,
        queue_timeout: float = QUEUE_TIMEOUT,
    ) -> None:
        self.name = name
        self.pool = pool
        self.counters = Counters()
        self.conns: set[Conn] = set()
        self.toxics: dict[str, Toxic] = {}
        #: toxic id -> the instance addresses it acts on (a toxic absent here acts on all)
        self.toxic_hosts: dict[str, frozenset[str]] = {}
        self._toxics_enabled = toxics
        self._pump: Pump = pump if toxics else pump_plain
        self._connect_timeout = connect_timeout
        self._queue_timeout = queue_timeout
        self._ids = itertools.count(1)
        #: awaited on each client connection accepted (the kernel path looks for refusals)
        self.accepted: Callable[[], Awaitable[None]] | None = None
        #: whether the listener takes connections (a deferred one: once rotation has an instance)
        self.listening = False
        self._accepting = anyio.CancelScope()

    async def serve(
        self,
        listener: socket.socket,
        *,
        defer: bool = False,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on ``listener`` until cancelled; every connection ends with it.

        ``defer``: ``listener`` is bound but not listening (SO_REUSEPORT: other balancers
        share its port); it starts listening once an instance is in rotation, so no client
        the kernel hands it waits for one while another balancer could serve it.
        """
        try:
            async with anyio.create_task_group() as tg:
                task_status.started()
                with self._accepting:
                    while defer and not self.pool.candidates:
                        await self.pool.wait_for_candidates(math.inf)
                    if defer:
                        await _listen_when_free(self.name, listener)
                    self.listening = True
                    while True:
                        try:
                            client = await _sock.accept(listener)
                        except OSError as exc:
                            if exc.errno not in _ACCEPT_TRANSIENT:
                                raise
                            log.warning("endpoint %s: accept failed (%s); retrying", self.name, exc)
                            await anyio.sleep(0.1)
                            continue
                        if _held >= MAX_OPEN:
                            self._refuse_over_bound(client)
                            continue
                        tg.start_soon(self._handle, client)
                        # A flood of connects must not starve the connections already open.
                        await checkpoint()
                self.listening = False
                _sock.close(listener)  # the open connections go on to their end
        finally:
            self.listening = False
            _sock.close(listener)

    def _refuse_over_bound(self, client: socket.socket) -> None:
        global _said_full
        self.counters.rejected += 1
        _sock.abort(client)
        _sock.close(client)
        if anyio.current_time() - _said_full >= 10.0:  # a flood is a line every 10 s, not one each
            _said_full = anyio.current_time()
            log.warning(
                "endpoint %s: the balancers hold %d connections, the most they take: resetting new ones",
                self.name,
                _held,
            )

    def stop_accepting(self) -> None:
        """Close the listener: no new connection (the kernel gives them to the other listeners
        of a shared port); the open ones go on."""
        self._accepting.cancel()

    async def _handle(self, client: socket.socket) -> None:
        self.counters.connections += 1
        _count(1)  # counted here, not at accept: a task never started (asyncio) never ends either
        try:
            await self._balance(client)
        finally:
            _count(-1)

    async def _balance(self, client: socket.socket) -> None:
        try:
            if self.accepted is not None:
                await self.accepted()
            picked = await self._connect()
            if picked is None:
                # No instance can take it: reset, so the client fails at once.
                self.counters.rejected += 1
                _sock.abort(client)
                return
            server, entry = picked
            entry.active += 1
            entry.connections += 1
            conn: Conn | None = None
            try:
                async with anyio.create_task_group() as tg:
                    conn = Conn(client, server, entry, tg)
                    self.conns.add(conn)
                    if self.toxics:
                        for toxic_id, spec in self.toxics.items():
                            self._maybe_attach(conn, toxic_id, spec)
                    tg.start_soon(self._pump, server, conn.down)
                    await self._pump(client, conn.up)
            finally:
                if conn is not None:
                    self.conns.discard(conn)
                self.pool.closed(entry)
                _sock.close(server)
        finally:
            _sock.close(client)

    async def _connect(self) -> tuple[socket.socket, Entry] | None:
        """Connect to the next instance in rotation, trying the others after a refusal.

        When no instance is in rotation at all (each one restarting, say), the client waits
        up to ``queue_timeout`` for one to come, as it would retry its SYN to a real load
        balancer; when every instance was tried and refused, it fails at once.
        """
        pool = self.pool
        tried: set[Entry] = set()
        while True:
            entry = pool.pick(tried)
            if entry is None:
                if tried or not await pool.wait_for_candidates(self._queue_timeout):
                    return None
                continue
            tried.add(entry)
            backend = entry.backend
            try:
                with anyio.fail_after(self._connect_timeout):
                    server = await _sock.connect(backend.host, backend.port)
            except OSError:  # refused, unreachable, or timed out (TimeoutError)
                self.counters.refused += 1
                pool.refused(entry)
                continue
            except BaseException:
                if entry.failures:
                    pool.abandoned(entry)
                raise
            if entry.failures:
                pool.connected(entry)
            return server, entry

    def cut(self, instance_ids: Collection[str]) -> int:
        """Reset the open connections to ``instance_ids`` (a drain that ran out of time);
        returns how many."""
        doomed = [c for c in self.conns if c.entry.backend.instance_id in instance_ids]
        for conn in doomed:
            conn.abort()
        return len(doomed)

    def add_toxic(self, spec: Toxic, hosts: Collection[str] = ()) -> str:
        """Apply ``spec`` to open and future connections (only those to instances at ``hosts``,
        when given); returns its id."""
        if not self._toxics_enabled:
            raise ToxicsUnsupportedError(
                f"endpoint {self.name!r} was opened with toxics=False: reopen it with toxics=True"
            )
        toxic_id = f"{type(spec).__name__.lower()}_{spec.stream}_{next(self._ids)}"
        self.toxics[toxic_id] = spec
        if hosts:
            self.toxic_hosts[toxic_id] = frozenset(hosts)
        for conn in self.conns:
            self._maybe_attach(conn, toxic_id, spec)
        return toxic_id

    def remove_toxic(self, toxic_id: str) -> None:
        """Stop toxic ``toxic_id``; raises UnknownToxicError."""
        if self.toxics.pop(toxic_id, None) is None:
            raise UnknownToxicError(
                f"no toxic {toxic_id!r} on endpoint {self.name!r}: use an id from add_toxic"
            )
        self.toxic_hosts.pop(toxic_id, None)
        for conn in self.conns:
            detach(conn.up, toxic_id)
            detach(conn.down, toxic_id)

    def clear_toxics(self) -> None:
        """Stop every toxic."""
        for toxic_id in list(self.toxics):
            self.remove_toxic(toxic_id)

    def _maybe_attach(self, conn: Conn, toxic_id: str, spec: Toxic) -> None:
        hosts = self.toxic_hosts.get(toxic_id)
        if hosts is None or conn.entry.backend.host in hosts:
            _maybe_attach(conn, toxic_id, spec)


def _maybe_attach(conn: Conn, toxic_id: str, spec: Toxic) -> None:
    # Toxicity is drawn once per connection, as toxiproxy does per link.
    if spec.toxicity < 1.0 and random.random() >= spec.toxicity:
        return
    attach(conn.up if spec.stream == "upstream" else conn.down, toxic_id, spec)
