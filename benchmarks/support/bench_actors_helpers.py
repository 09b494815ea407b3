"""Actors and raw peers that benchmarks/actors.py runs in child processes."""

from __future__ import annotations

import os
import socket
import struct
import sys
from typing import Any

import anyio
import msgspec

from actors import Actor


class Item(msgspec.Struct, frozen=True):
    """The message every throughput figure carries."""

    seq: int
    payload: str = "status: ReadyRole"


class Count(msgspec.Struct, frozen=True):
    """Ask how many Items arrived."""


class RawEcho(msgspec.Struct, frozen=True):
    """Ask the actor to serve a raw echo on a Unix socket path, in its own process."""

    path: str


class Sink(Actor):
    """Counts Items; answers Count, echoes anything else; can serve a raw echo socket."""

    def __init__(self) -> None:
        self.count = 0

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Item):
            self.count += 1
            return None
        if isinstance(message, Count):
            return self.count
        if isinstance(message, RawEcho):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(message.path)
            listener.listen(1)
            self.start_soon(self._echo, listener)
            return os.getpid()
        return message

    async def _echo(self, listener: socket.socket) -> None:
        # The leanest echo anyio allows: raw non-blocking socket calls, waiting only when they
        # would block. This is the baseline the actor's ask is compared with.
        listener.setblocking(False)
        await anyio.wait_readable(listener)
        conn, _ = listener.accept()
        conn.setblocking(False)
        with conn, listener:
            while True:
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    await anyio.wait_readable(conn)
                    continue
                if not data:
                    return
                conn.send(data)


def raw_pipe_child(fd: int) -> None:
    """A raw length-prefixed msgpack reader: decodes every frame into an Item, then acks."""
    read_items(socket.socket(fileno=fd), int(sys.argv[3]))


def read_items(sock: Any, expected: int) -> None:
    """Read ``expected`` length-prefixed Items off a blocking socket (or TLS socket), decoding
    each, then ack with one byte."""
    decode = msgspec.msgpack.Decoder(Item).decode
    unpack = struct.Struct(">I").unpack_from
    rest = b""
    count = 0
    while count < expected:
        chunk = sock.recv(256 * 1024)
        if not chunk:
            return
        data = rest + chunk if rest else chunk
        view = memoryview(data)
        pos, end = 0, len(data)
        while end - pos >= 4:
            size = unpack(data, pos)[0]
            if end - pos - 4 < size:
                break
            decode(view[pos + 4 : pos + 4 + size])
            count += 1
            pos += 4 + size
        rest = data[pos:]
    sock.sendall(b"k")


if __name__ == "__main__":
    raw_pipe_child(int(sys.argv[2]))
