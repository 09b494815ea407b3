"""UDP balancing: each client address sticks to one instance; replies are routed back."""

from __future__ import annotations

import logging
import math

import anyio
from anyio.abc import ConnectedUDPSocket, TaskGroup, TaskStatus, UDPSocket

from ._descriptors import descriptor_share
from ._pool import Entry, Pool
from ._tcp import Counters

log = logging.getLogger("fabric.network")

_UDP_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


#: client sessions every UDP balancer of this process keeps at once, each a socket of its own
#: for up to the idle timeout: past it a new client's datagram is dropped, so that datagrams
#: from many source ports (any role of this machine can send them) cannot take the process to
#: its descriptor limit; the sessions kept go on
MAX_SESSIONS = descriptor_share(8, floor=32, unlimited=32768)
_held = 0
_said_full = -math.inf


def _count(change: int) -> None:
    global _held
    _held += change


class _Session:
    __slots__ = ("client", "entry", "last", "scope", "sock")

    def __init__(self, client: tuple[str, int], entry: Entry, sock: ConnectedUDPSocket) -> None:
        self.client = client
        self.entry = entry
        self.sock = sock
        self.scope = anyio.CancelScope()
        self.last = anyio.current_time()


class UdpBalancer:
    """Forwards datagrams of one endpoint, keeping each client on one instance.

    A client's session ends after ``idle_timeout`` seconds without traffic (Azure's
    default idle timeout is 4 minutes), or when its instance leaves rotation or
    refuses (ICMP port unreachable); its next datagram then picks an instance anew.
    """

    def __init__(self, name: str, pool: Pool, *, idle_timeout: float = 240.0) -> None:
        self.name = name
        self.pool = pool
        self.counters = Counters()
        self._idle_timeout = idle_timeout
        self._sessions: dict[tuple[str, int], _Session] = {}

    async def serve(
        self, sock: UDPSocket, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Forward datagrams arriving on ``sock`` until cancelled."""
        async with sock, anyio.create_task_group() as tg:
            task_status.started()
            while True:
                try:
                    data, client = await sock.receive()
                except _UDP_ERRORS as exc:
                    # Linux reports an earlier reply's ICMP error here; the socket lives on.
                    log.debug("endpoint %s: receive error %r", self.name, exc)
                    continue
                await self._forward(data, client, sock, tg)

    async def _forward(self, data: bytes, client: tuple[str, int], public: UDPSocket, tg: TaskGroup) -> None:
        # A send refused by one instance is tried on the others, as for TCP connects.
        for _ in range(len(self.pool.candidates) + 1):
            session = self._sessions.get(client)
            if session is not None and not self.pool.candidate(session.entry):
                self._drop(session)
                session = None
            if session is None:
                if _held >= MAX_SESSIONS:
                    self._over_bound()
                    return
                session = await self._open(client, public, tg)
                if session is None:
                    self.counters.rejected += 1
                    return
            session.last = anyio.current_time()
            try:
                await session.sock.send(data)
            except _UDP_ERRORS:
                self._refused(session)
                continue
            session.entry.traffic[0] += len(data)
            return

    async def _open(self, client: tuple[str, int], public: UDPSocket, tg: TaskGroup) -> _Session | None:
        tried: set[Entry] = set()
        while (entry := self.pool.pick(tried)) is not None:
            tried.add(entry)
            backend = entry.backend
            try:
                sock = await anyio.create_connected_udp_socket(backend.host, backend.port)
            except OSError:
                self.counters.refused += 1
                self.pool.refused(entry)
                continue
            if entry.failures:
                # A UDP socket proves nothing: its first reply does (see _replies).
                self.pool.abandoned(entry)
            session = _Session(client, entry, sock)
            self._sessions[client] = session
            _count(1)
            self.counters.connections += 1
            entry.connections += 1
            entry.active += 1
            tg.start_soon(self._replies, session, public)
            return session
        return None

    def _over_bound(self) -> None:
        global _said_full
        self.counters.rejected += 1
        if anyio.current_time() - _said_full >= 10.0:  # a flood is a line every 10 s, not one each
            _said_full = anyio.current_time()
            log.warning(
                "endpoint %s: the UDP balancers keep %d client sessions, the most they take: "
                "dropping new clients' datagrams",
                self.name,
                _held,
            )

    def _refused(self, session: _Session) -> None:
        self.counters.refused += 1
        self.pool.refused(session.entry)
        self._drop(session)

    def _drop(self, session: _Session) -> None:
        # Forgotten at once, so the client's next datagram opens a fresh session.
        if self._sessions.get(session.client) is session:
            del self._sessions[session.client]
        session.scope.cancel()

    async def _replies(self, session: _Session, public: UDPSocket) -> None:
        try:
            with session.scope:
                async with session.sock:
                    while True:
                        deadline = session.last + self._idle_timeout
                        with anyio.move_on_after(deadline - anyio.current_time()):
                            try:
                                reply = await session.sock.receive()
                            except _UDP_ERRORS:
                                self._refused(session)
                                return
                            if session.entry.failures:
                                self.pool.connected(session.entry)
                            session.entry.traffic[1] += len(reply)
                            try:
                                await public.sendto(reply, *session.client)
                            except _UDP_ERRORS as exc:
                                log.debug("endpoint %s: reply lost: %r", self.name, exc)
                            continue
                        if anyio.current_time() >= session.last + self._idle_timeout:
                            return
        finally:
            _count(-1)
            if self._sessions.get(session.client) is session:
                del self._sessions[session.client]
            self.pool.closed(session.entry)
