"""One proxied TCP connection: the two byte pumps between client and instance.

The pumps are the hot path. A toxic-capable pump tests one attribute per chunk
(``flow.lane``) and otherwise does what the plain pump does: receive, count, send.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketAttribute, SocketStream

if TYPE_CHECKING:
    from ._lane import Attached, Lane
    from ._pool import Entry

CHUNK = 65536
# SO_LINGER on with a zero timeout: close() sends RST and drops unsent data.
_LINGER_ABORT = struct.pack("ii", 1, 0)
_PUMP_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class Flow:
    """One direction of a connection, and the toxics acting on it."""

    __slots__ = ("conn", "dst", "index", "lane", "toxics")

    def __init__(self, conn: Conn, dst: SocketStream, index: int) -> None:
        self.conn = conn
        self.dst = dst
        self.index = index  # 0 upstream (client->instance), 1 downstream
        self.lane: Lane | None = None  # set while toxics shape this direction
        self.toxics: tuple[Attached, ...] = ()


class Conn:
    """A client connection joined to one backend instance."""

    __slots__ = ("client", "down", "entry", "scope", "server", "tg", "up")

    def __init__(
        self, client: SocketStream, server: SocketStream, entry: Entry, tg: anyio.abc.TaskGroup
    ) -> None:
        self.client = client
        self.server = server
        self.entry = entry
        self.tg = tg
        self.scope = tg.cancel_scope
        self.up = Flow(self, server, 0)
        self.down = Flow(self, client, 1)

    def close(self) -> None:
        """End the connection with a normal close of both sides."""
        self.scope.cancel()

    def abort(self) -> None:
        """End the connection with a TCP reset of both sides."""
        abort_stream(self.client)
        abort_stream(self.server)
        self.scope.cancel()


def abort_stream(stream: SocketStream) -> None:
    """Make the coming close of ``stream`` send RST instead of FIN."""
    try:
        sock: socket.socket = stream.extra(SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
    except (OSError, anyio.TypedAttributeLookupError):
        pass  # already closed: nothing to reset


async def pump_plain(src: SocketStream, flow: Flow) -> None:
    """Copy ``src`` to ``flow.dst`` until end of stream, then pass the end on."""
    receive = src.receive
    send = flow.dst.send
    traffic = flow.conn.entry.traffic
    i = flow.index
    try:
        while True:
            data = await receive(CHUNK)
            traffic[i] += len(data)
            await send(data)
    except anyio.EndOfStream:
        await _send_eof(flow)
    except _PUMP_ERRORS as exc:
        _failed(flow.conn, exc)


async def pump(src: SocketStream, flow: Flow) -> None:
    """Like pump_plain, handing chunks to the flow's toxic lane while it has one."""
    receive = src.receive
    send = flow.dst.send
    traffic = flow.conn.entry.traffic
    i = flow.index
    try:
        while True:
            data = await receive(CHUNK)
            traffic[i] += len(data)
            if flow.lane is None:
                await send(data)
            else:
                await flow.lane.put(data)
    except anyio.EndOfStream:
        if flow.lane is None:
            await _send_eof(flow)
        else:
            await flow.lane.put(None)
    except _PUMP_ERRORS as exc:
        _failed(flow.conn, exc)


async def _send_eof(flow: Flow) -> None:
    try:
        await flow.dst.send_eof()
    except _PUMP_ERRORS as exc:
        _failed(flow.conn, exc)


def _failed(conn: Conn, exc: BaseException) -> None:
    # A reset on one side is passed on as a reset; any other failure closes both.
    cause = exc.__cause__ or exc
    if isinstance(cause, ConnectionResetError):
        conn.abort()
    else:
        conn.close()
