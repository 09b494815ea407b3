"""One proxied TCP connection: the two byte pumps between client and instance.

The pumps are the hot path. The toxic-capable pump tests one attribute per chunk
(``flow.lane``) and otherwise does exactly what the plain pump does.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import checkpoint

from . import _sock
from ._splice import splice_flow

if TYPE_CHECKING:
    from ._lane import Attached, Lane
    from ._pool import Entry

CHUNK = 65536
PUMP_ERRORS = (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError)


class Flow:
    """One direction of a connection, and the toxics acting on it."""

    __slots__ = ("conn", "done", "dst", "index", "lane", "toxics")

    def __init__(self, conn: Conn, dst: socket.socket, index: int) -> None:
        self.conn = conn
        self.dst = dst
        self.index = index  # 0 upstream (client->instance), 1 downstream
        self.lane: Lane | None = None  # set while toxics shape this direction
        self.toxics: tuple[Attached, ...] = ()
        self.done = False  # its end of stream has been read: nothing more will flow


class Conn:
    """A client connection joined to one backend instance."""

    __slots__ = ("client", "down", "entry", "scope", "server", "tg", "up")

    def __init__(
        self,
        client: socket.socket,
        server: socket.socket,
        entry: Entry,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        self.client = client
        self.server = server
        self.entry = entry
        self.tg = tg
        self.scope = tg.cancel_scope
        self.up = Flow(self, server, 0)
        self.down = Flow(self, client, 1)

    def close(self) -> None:
        """End the connection with a normal close (FIN) of both sides."""
        self.scope.cancel()

    def abort(self) -> None:
        """End the connection with a TCP reset of both sides."""
        _sock.abort(self.client)
        _sock.abort(self.server)
        self.scope.cancel()

    def failed(self, exc: BaseException) -> None:
        """A pump hit ``exc``: a reset is passed on as a reset, anything else closes."""
        if isinstance(exc, ConnectionResetError):
            self.abort()
        else:
            self.close()


async def pump_plain(src: socket.socket, flow: Flow) -> None:
    """Copy ``src`` to ``flow.dst`` until end of stream, then pass the end on."""
    recv = src.recv
    dst = flow.dst
    send = dst.send
    wait_readable = anyio.wait_readable
    traffic = flow.conn.entry.traffic
    i = flow.index
    try:
        while True:
            try:
                data = recv(CHUNK)
            except BlockingIOError:
                await wait_readable(src)
                continue
            if not data:
                flow.done = True
                _sock.shutdown_write(dst)
                return
            n = len(data)
            traffic[i] += n
            try:
                sent = send(data)
            except BlockingIOError:
                sent = 0
            if sent < n:
                await _sock.send_all(dst, data, sent)
            # A short read has most likely emptied the socket: wait rather than
            # try a recv bound to fail. A full one is bulk: the kernel moves the rest.
            if n < CHUNK:
                await wait_readable(src)
            else:
                await splice_flow(src, flow)
                return
    except PUMP_ERRORS as exc:
        flow.conn.failed(exc)


async def pump(src: socket.socket, flow: Flow) -> None:
    """Like pump_plain, handing chunks to the flow's toxic lane while it has one."""
    recv = src.recv
    dst = flow.dst
    send = dst.send
    wait_readable = anyio.wait_readable
    traffic = flow.conn.entry.traffic
    i = flow.index
    bulk = False
    try:
        while True:
            try:
                data = recv(CHUNK)
            except BlockingIOError:
                await wait_readable(src)
                continue
            if not data:
                flow.done = True
                if flow.lane is None:
                    _sock.shutdown_write(dst)
                else:
                    await flow.lane.put(None)
                return
            n = len(data)
            traffic[i] += n
            if flow.lane is None:
                try:
                    sent = send(data)
                except BlockingIOError:
                    sent = 0
                if sent < n:
                    await _sock.send_all(dst, data, sent)
            else:
                await flow.lane.put(data)
            if n < CHUNK:
                await wait_readable(src)
            elif flow.lane is None and not bulk:
                # Bulk with no toxic: the kernel moves the bytes until a toxic attaches.
                if await splice_flow(src, flow):
                    return
                bulk = True  # a toxic came: stay on this path from now on
            else:
                await checkpoint()
    except PUMP_ERRORS as exc:
        flow.conn.failed(exc)
