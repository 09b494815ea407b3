"""The connecting side of network links: connect to another node's listener, and connect again,
with backoff and jitter, whenever the link drops, until closed."""

from __future__ import annotations

import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from ._net import Hello, LinkOptions, Peer, read_hello, send_hello
from ._tls import ClientTLS, LinkRefused, TLSChannel, describe_tls_error

if TYPE_CHECKING:
    from ._system import ActorSystem

logger = logging.getLogger("actors.net")


async def open_tcp(host: str, port: int, source: str = "") -> socket.socket:
    """A connected non-blocking TCP socket (Nagle off: frames leave at once), from ``source``
    (a local address; "" the system's choice).

    Raises:
        OSError: no address of ``host`` accepted the connection.
    """
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"{host}:{port} has no address")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if source:
                sock.bind((source, 0))
            try:
                sock.connect(address)
            except BlockingIOError:
                await anyio.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, f"cannot connect to {host}:{port}: {os.strerror(code)}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error


async def attempt(
    address: tuple[str, int], context: ssl.SSLContext, tls: ClientTLS, name: str, options: LinkOptions
) -> tuple[TLSChannel, Hello]:
    """One connection: TCP, the TLS handshake, the hellos, within the handshake timeout.

    Raises:
        LinkRefused: a certificate (either one) or the hello was refused; the message says why.
        OSError: the connection failed, or did not finish in time (TimeoutError).
    """
    host, port = address
    where = f"{host}:{port}"
    with anyio.fail_after(options.handshake_timeout):
        sock = await open_tcp(host, port, options.source)
        channel = TLSChannel(sock, context, server_side=False, server_hostname=tls.server_name)
        try:
            try:
                await channel.handshake()
            except ssl.SSLCertVerificationError as exc:
                raise LinkRefused(
                    f"the certificate of {where} is not trusted (as {tls.server_name!r}): "
                    f"{exc.verify_message or exc}"
                ) from None
            except ssl.SSLError as exc:
                raise LinkRefused(f"TLS with {where} failed: {describe_tls_error(exc)}") from None
            await send_hello(channel, name)
            try:
                hello = await read_hello(channel, where)
            except ssl.SSLError as exc:
                # Under TLS 1.3 the server judges our certificate after our handshake is done:
                # its verdict arrives as an alert at our first read.
                raise LinkRefused(f"{where} refused our certificate: {describe_tls_error(exc)}") from None
            except ConnectionResetError:
                raise LinkRefused(
                    f"{where} closed the connection before its hello (it may have refused our"
                    " certificate: see its log)"
                ) from None
        except BaseException:
            channel.close()
            raise
    return channel, hello


def backoff(failures: int, options: LinkOptions) -> float:
    """How long to wait before the next attempt: doubling, capped, the upper half at random
    (so that many nodes cut off at once do not all come back in the same instant)."""
    ceiling = min(options.reconnect_max, options.reconnect_min * 2 ** min(failures, 30))
    return random.uniform(ceiling / 2, ceiling)


class Connector:
    """Keeps one node's link up from our side: connects again whenever it drops."""

    def __init__(
        self,
        system: ActorSystem,
        address: tuple[str, int],
        tls: ClientTLS,
        name: str,
        options: LinkOptions,
        addresses: Callable[[], Sequence[tuple[str, int]]] | None = None,
    ) -> None:
        self.system = system
        self.address = address
        #: where to link again after a drop, tried in turn each round (each server's certificate
        #: named for its own address); None: ``address`` only
        self.addresses = addresses
        self.tls = tls
        self.name = name
        self.options = options
        self.peer: Peer | None = None

    async def run(self, *, task_status: TaskStatus[Peer] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect (the first failure is raised, before ``task_status``), then keep the link up
        until its Peer is closed."""
        context = await anyio.to_thread.run_sync(self.tls.context)
        channel, hello = await attempt(self.address, context, self.tls, self.name, self.options)
        self.peer = peer = Peer(self.system, hello.node, self.options)
        task_status.started(peer)
        failures = 0
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._close_with, peer, task_group.cancel_scope)
            while True:
                began = time.monotonic()
                await peer.run(channel)
                if peer.closed.is_set():
                    break
                up_for = time.monotonic() - began
                failures = 0 if up_for >= self.options.reconnect_max else failures + 1
                channel, hello = await self._again(peer, failures)
            task_group.cancel_scope.cancel()

    async def _again(self, peer: Peer, failures: int) -> tuple[TLSChannel, Hello]:
        """Link again (after a backoff each round), to the addresses in turn."""
        while True:
            await anyio.sleep(backoff(failures, self.options))
            candidates = list(self.addresses()) if self.addresses is not None else []
            for address in candidates or [self.address]:
                tls = self.tls if not candidates else replace(self.tls, server_name=address[0])
                where = "{}:{}".format(*address)
                try:
                    # Read the certificates again: they may have been renewed meanwhile.
                    context = await anyio.to_thread.run_sync(tls.context)
                    channel, hello = await attempt(address, context, tls, self.name, self.options)
                except (OSError, ValueError) as exc:  # LinkRefused is an OSError
                    logger.warning("cannot link to node %r at %s again: %s", peer.node, where, exc)
                    continue
                if hello.node != peer.node:
                    logger.warning("%s now calls itself %r, not %r", where, hello.node, peer.node)
                self.address = address
                return channel, hello
            failures += 1

    @staticmethod
    async def _close_with(peer: Peer, scope: anyio.CancelScope) -> None:
        await peer.closed.wait()
        scope.cancel()
