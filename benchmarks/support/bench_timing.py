"""Timing helpers the benchmarks share."""

from __future__ import annotations

import os
import socket
import statistics
import struct
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec


async def seconds_per_call(call: Callable[[], Awaitable[object]], n: int) -> float:
    """The mean wall-clock seconds of ``n`` awaited calls of ``call``, one after another."""
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n


def send_frames(sock: socket.socket, items: Sequence[object]) -> float:
    """Seconds to send ``items`` as length-prefixed msgpack frames in 64 KiB writes until the far
    end's one-byte acknowledgement (the raw baseline the actor links are measured against)."""
    encode_into = msgspec.msgpack.Encoder().encode_into
    pack_into = struct.Struct(">I").pack_into
    start = time.perf_counter()
    buffer = bytearray()
    for item in items:
        offset = len(buffer)
        encode_into(item, buffer, offset + 4)
        pack_into(buffer, offset, len(buffer) - offset - 4)
        if len(buffer) >= 64 * 1024:
            sock.sendall(buffer)
            buffer.clear()
    sock.sendall(buffer)
    sock.recv(1)
    return time.perf_counter() - start


def bare_fork(n: int = 200) -> float:
    """Median seconds to fork this process, let the child exit and reap it: the floor of any
    fork-based start (the raw baseline beside a template's fork)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_average() -> str:
    """The load averages, printed beside each figure (ratios hold on a loaded machine)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"
