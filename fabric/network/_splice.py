"""Bulk bytes socket to socket through a pipe with splice(2): the kernel moves the pages.

A pump switches to it once a direction has filled a whole chunk (a bulk transfer, not a
request), so short request/response connections never pay for the pipe.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import checkpoint

from . import _sock

if TYPE_CHECKING:
    from ._conn import Flow

#: bytes the pipe between the sockets may hold (its default is 64 KiB)
PIPE_SIZE = 1 << 20
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


async def splice_flow(src: socket.socket, flow: Flow) -> bool:
    """Move ``src``'s bytes to ``flow.dst`` until end of stream (True, the end passed on) or
    until a toxic lane attaches to the flow (False: the caller's pump takes over)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # a smaller pipe still works
            fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
        dst = flow.dst
        sfd, dfd = src.fileno(), dst.fileno()
        traffic = flow.conn.entry.traffic
        i = flow.index
        while flow.lane is None:
            try:
                n = os.splice(sfd, w, PIPE_SIZE, flags=_FLAGS)
            except BlockingIOError:
                await anyio.wait_readable(src)
                continue
            if n == 0:
                flow.done = True
                _sock.shutdown_write(dst)
                return True
            traffic[i] += n
            while n:
                try:
                    n -= os.splice(r, dfd, n, flags=_FLAGS)
                except BlockingIOError:
                    await anyio.wait_writable(dst)
            await checkpoint()
        return False
    finally:
        os.close(r)
        os.close(w)
