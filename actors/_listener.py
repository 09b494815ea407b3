"""The accepting side of network links: a TCP port where other nodes connect over mutual TLS."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from ._net import Hello, LinkOptions, Peer, read_hello, refuse, send_hello
from ._tls import LinkRefused, ServerTLS, TLSChannel, describe_tls_error

if TYPE_CHECKING:
    from ._system import ActorSystem

logger = logging.getLogger("actors.net")

#: Longest node name a hello may carry.
MAX_NODE_NAME = 253


class Listener:
    """Accepts links from other nodes and keeps a Peer per node name, across reconnections.

    Every connection must finish its TLS handshake (a client certificate from the CA is
    required) and its hello within ``options.handshake_timeout``; with ``check_names`` a node
    may only call itself by a name its certificate carries. Whatever fails is logged and cut
    off, without disturbing the other links.
    """

    def __init__(
        self,
        system: ActorSystem,
        host: str,
        port: int,
        tls: ServerTLS,
        *,
        name: str,
        options: LinkOptions,
        check_names: bool = True,
        on_connect: Callable[[Peer], object] | None = None,
    ) -> None:
        self.system = system
        self.node = name
        self.options = options
        self.check_names = check_names
        self.on_connect = on_connect
        #: called with a node's Peer each time one of its links ends (it may be up again already)
        self.on_disconnect: Callable[[Peer], object] | None = None
        #: called at each hello with the node's name, its certificate (as ssl's getpeercert()
        #: gives it) and its address ("host:port"): a reason to refuse the link, or None
        self.admit: Callable[[str, dict[str, Any], str], str | None] | None = None
        #: every node that connected (or that a Ref was made for), by name
        self.peers: dict[str, Peer] = {}
        #: the address it listens on (the port chosen, when asked for port 0)
        self.address: tuple[str, int] = (host, port)
        self._tls = tls
        self._context: ssl.SSLContext | None = None
        self._handshakes = 0
        self._scope = anyio.CancelScope()
        self._closed = anyio.Event()

    def peer(self, node: str) -> Peer:
        """The Peer of a node, made now if it never connected (its Refs work once it does)."""
        peer = self.peers.get(node)
        if peer is None:
            peer = self.peers[node] = Peer(self.system, node, self.options)
        return peer

    async def wait_peer(self, node: str) -> Peer:
        """Wait until the node is connected; return its Peer."""
        peer = self.peer(node)
        await peer.wait_connected()
        return peer

    async def reload_tls(self, tls: ServerTLS | None = None) -> None:
        """Read the certificates again (renewed on disk), or use ``tls``, for the next links."""
        self._tls = tls or self._tls
        self._context = await anyio.to_thread.run_sync(self._tls.context)

    async def serve(self, *, task_status: TaskStatus[Listener] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen and accept until aclose(); ready (``task_status``) once the port is open."""
        await self.reload_tls()
        host, port = self.address
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart takes its port back
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
            self.address = sock.getsockname()[:2]
            logger.info("node %r listens for links on %s:%d", self.node, *self.address)
            task_status.started(self)
            with self._scope:
                async with anyio.create_task_group() as task_group:
                    while True:
                        try:
                            conn, peer_address = sock.accept()
                        except BlockingIOError:
                            await anyio.wait_readable(sock)
                            continue
                        except OSError as exc:  # out of descriptors, for one: wait, do not spin
                            logger.error("cannot accept a link: %s", exc)
                            await anyio.sleep(0.1)
                            continue
                        if self._handshakes >= self.options.max_handshakes:
                            logger.warning(
                                "%d links are being set up already: closing the one from %s:%d",
                                self._handshakes,
                                *peer_address[:2],
                            )
                            conn.close()
                            continue
                        self._handshakes += (
                            1  # now, not when the task starts: it may be after the next accept
                        )
                        task_group.start_soon(self._accept, conn, f"{peer_address[0]}:{peer_address[1]}")
        finally:
            sock.close()
            self._closed.set()

    async def _accept(self, conn: socket.socket, who: str) -> None:
        assert self._context is not None
        hello: Hello | None = None
        channel: TLSChannel | None = None
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel = TLSChannel(conn, self._context, server_side=True)
            with anyio.move_on_after(self.options.handshake_timeout) as deadline:
                hello = await self._greet(channel, who)
            if deadline.cancelled_caught:
                logger.warning(
                    "cut off %s: no TLS handshake and hello within %g s",
                    who,
                    self.options.handshake_timeout,
                )
        except OSError as exc:  # gone before we began
            logger.warning("a link from %s failed before its handshake: %s", who, exc)
        finally:
            self._handshakes -= 1
            if hello is None:
                if channel is not None:
                    channel.close()
                else:
                    conn.close()
        if hello is not None and channel is not None:
            peer = self.peer(hello.node)
            if self.on_connect is not None:
                try:
                    self.on_connect(peer)
                except Exception:  # the owner's bug must not stop the listener
                    logger.exception("on_connect failed for node %r", peer.node)
            try:
                await peer.run(channel)
            finally:
                if self.on_disconnect is not None:
                    try:
                        self.on_disconnect(peer)
                    except Exception:  # the owner's bug must not stop the listener
                        logger.exception("on_disconnect failed for node %r", peer.node)

    async def _greet(self, channel: TLSChannel, who: str) -> Hello | None:
        """The handshake and the hello; None (logged) when the connection is refused."""
        try:
            await channel.handshake()
            hello = await read_hello(channel, who)
        except ssl.SSLError as exc:
            logger.warning("refused a link from %s: TLS: %s", who, describe_tls_error(exc))
            return None
        except LinkRefused as exc:
            logger.warning("refused a link: %s", exc)
            return None
        except OSError as exc:
            logger.warning("a link from %s failed during its handshake: %s", who, exc)
            return None
        reason = self._refusal(hello, channel)
        if reason is None and self.admit is not None:
            reason = self.admit(hello.node, channel.peer_certificate, who)
        if reason is not None:
            logger.warning("refused a link from %s: %s", who, reason)
            with contextlib.suppress(OSError):
                await refuse(channel, reason)
            return None
        await send_hello(channel, self.node)
        return hello

    def _refusal(self, hello: Hello, channel: TLSChannel) -> str | None:
        if not hello.node or len(hello.node) > MAX_NODE_NAME:
            return f"a node name must have 1 to {MAX_NODE_NAME} characters, not {len(hello.node)}"
        if hello.node == self.node:
            return f"node {hello.node!r} is this node's own name"
        if self.check_names and hello.node not in channel.peer_names:
            return (
                f"node {hello.node!r} shows a certificate for {', '.join(channel.peer_names) or 'no name'}:"
                " a node must use the name its certificate carries"
            )
        return None

    async def aclose(self) -> None:
        """Stop listening and close every link (their waiting asks fail with ActorDead)."""
        self._scope.cancel()
        for peer in self.peers.values():
            peer.close()
