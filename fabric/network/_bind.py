"""Binding an endpoint's public port, or the next free one when it is taken."""

from __future__ import annotations

import errno
import logging
import socket

import anyio
from anyio.abc import SocketAttribute, UDPSocket

from . import _sock
from ._errors import NoFreePortError

log = logging.getLogger("fabric.network")

# How many ports after a taken one are tried before giving up.
PORT_ATTEMPTS = 100


def _candidates(port: int, attempts: int) -> list[int]:
    if port == 0:
        return [0]
    return list(range(port, min(port + attempts, 65536)))


def _taken(exc: OSError) -> bool:
    return exc.errno in (errno.EADDRINUSE, errno.EACCES)


async def bind_tcp(name: str, host: str, port: int, *, attempts: int = PORT_ATTEMPTS) -> socket.socket:
    """A listening socket on ``port`` or the first free port after it.

    Raises:
        NoFreePortError: every port tried is taken.
    """
    for candidate in _candidates(port, attempts):
        try:
            sock = await _sock.listen(host, candidate)
        except OSError as exc:
            if not _taken(exc):
                raise
            continue
        _announce(name, host, port, sock.getsockname()[1])
        return sock
    raise NoFreePortError(_no_port(name, host, port, attempts))


async def bind_udp(name: str, host: str, port: int, *, attempts: int = PORT_ATTEMPTS) -> UDPSocket:
    """A UDP socket on ``port`` or the first free port after it.

    Raises:
        NoFreePortError: every port tried is taken.
    """
    for candidate in _candidates(port, attempts):
        try:
            sock = await anyio.create_udp_socket(family=socket.AF_INET, local_host=host, local_port=candidate)
        except OSError as exc:
            if not _taken(exc):
                raise
            continue
        _announce(name, host, port, sock.extra(SocketAttribute.local_port))
        return sock
    raise NoFreePortError(_no_port(name, host, port, attempts))


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


def _no_port(name: str, host: str, port: int, attempts: int) -> str:
    last = min(port + attempts, 65536) - 1
    return (
        f"endpoint {name!r}: ports {port}-{last} on {host} are all taken; "
        "free one or choose another public port"
    )
