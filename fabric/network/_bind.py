"""Binding an endpoint's public port, or the next free one when it is taken."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

import anyio
from anyio.abc import SocketAttribute, UDPSocket

from . import _sock
from ._errors import NoFreePortError

log = logging.getLogger("fabric.network")

# How many ports from the public one are tried before giving up.
PORT_ATTEMPTS = 100
# Where the search goes on when ports below 1024 are not ours to bind (80 -> 8080).
UNPRIVILEGED_OFFSET = 8000

T = TypeVar("T")


async def _bind_first(
    name: str, host: str, port: int, attempts: int, open_one: Callable[[int], Awaitable[T]]
) -> T:
    """Open ``port`` with ``open_one``, moving on to the next port while they are taken."""
    candidate = last = port
    for _ in range(attempts if port else 1):
        last = candidate
        try:
            bound = await open_one(candidate)
        except OSError as exc:
            if exc.errno == errno.EACCES and 0 < candidate < 1024:
                # Not allowed below 1024: 81, 82... would fail alike, so 80 -> 8080.
                candidate += UNPRIVILEGED_OFFSET
            elif exc.errno in (errno.EADDRINUSE, errno.EACCES) and 0 < candidate < 65535:
                candidate += 1
            elif exc.errno in (errno.EADDRINUSE, errno.EACCES):
                break
            else:
                raise
            continue
        return bound
    tried = f"port {port} is" if last == port else f"ports from {port} to {last} are all"
    raise NoFreePortError(
        f"endpoint {name!r}: {tried} taken on {host}; free one or choose another public port"
    )


async def bind_tcp(
    name: str,
    host: str,
    port: int,
    *,
    attempts: int = PORT_ATTEMPTS,
    reuse_port: bool = False,
    now: bool = True,
    taken: Collection[int] = (),
) -> socket.socket:
    """A listening socket on ``port`` or the first free port after it.

    ``reuse_port`` and ``now``: as ``_sock.listen``; ``taken``: ports counted as taken
    whatever a bind says (with SO_REUSEPORT a bind succeeds on a port this process shares).

    Raises:
        NoFreePortError: every port tried is taken.
    """

    async def open_one(candidate: int) -> socket.socket:
        if candidate in taken:
            raise OSError(errno.EADDRINUSE, f"port {candidate} is taken by another endpoint")
        if reuse_port or not now:
            return await _sock.listen(host, candidate, reuse_port=reuse_port, now=now)
        return await _sock.listen(host, candidate)

    sock = await _bind_first(name, host, port, attempts, open_one)
    _announce(name, host, port, sock.getsockname()[1])
    return sock


async def bind_udp(name: str, host: str, port: int, *, attempts: int = PORT_ATTEMPTS) -> UDPSocket:
    """A UDP socket on ``port`` or the first free port after it.

    Raises:
        NoFreePortError: every port tried is taken.
    """

    async def open_one(candidate: int) -> UDPSocket:
        return await anyio.create_udp_socket(family=socket.AF_INET, local_host=host, local_port=candidate)

    sock = await _bind_first(name, host, port, attempts, open_one)
    _announce(name, host, port, sock.extra(SocketAttribute.local_port))
    return sock


def _announce(name: str, host: str, wanted: int, bound: int) -> None:
    if wanted and bound != wanted:
        log.warning(
            "endpoint %s: port %d on %s is taken; listening on port %d instead",
            name,
            wanted,
            host,
            bound,
        )
    else:
        log.info("endpoint %s: listening on %s:%d", name, host, bound)
