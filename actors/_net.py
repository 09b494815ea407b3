"""Network links: another node's registered actors behind Refs, over one TLS connection that may
drop and come back (see _listener for the accepting side, _connector for the connecting one).

Both sides speak the frames of a process link (actors._wire), each TELL and ASK naming the
registered actor it goes to. After the TLS handshake each side sends a HELLO (protocol version,
node name) and reads the other's before any other frame; a refusal is a FAIL frame instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec

from ._cell import LocalCell
from ._errors import ActorDead, MailboxFull
from ._link import LIMIT_BYTES, LinkFaults, Outbox, WireReply, pump
from ._mailbox import Reply
from ._ref import Ref
from ._tls import LinkRefused, TLSChannel
from ._wire import (
    HEADER_SIZE,
    BadFrame,
    Batch,
    Failure,
    Frame,
    Kind,
    append_frame,
    decode_frame,
    decode_value,
    decode_values,
)

if TYPE_CHECKING:
    from ._system import ActorSystem

logger = logging.getLogger("actors.net")

#: The version of the link protocol; a peer speaking another is refused in the hello.
#: (2: tells travel in TELLS frames.)
PROTOCOL_VERSION: Final = 2
#: The largest TELLS frame a sender grows (see actors._wire), at most half the link's
#: max_frame_size (the peer's is taken to be the same).
BATCH_BYTES: Final = 64 * 1024
#: A hello larger than this is refused: it carries a version and a name.
HELLO_LIMIT: Final = 4096


class Hello(msgspec.Struct, frozen=True):
    """The first frame each side of a network link sends, right after the TLS handshake."""

    version: int
    node: str


@dataclass(frozen=True, kw_only=True)
class LinkOptions:
    """How a network link is set up, watched and re-established.

    Attributes:
        handshake_timeout: the TLS handshake and the hello together must finish within this;
            a peer that is slower (or silent: slowloris) is cut off.
        ping_interval: seconds between liveness pings; None disables them.
        ping_timeout: a ping unanswered this long means the link is dead: it is cut (and the
            connecting side connects again).
        max_frame_size: a frame whose length prefix is larger cuts the link.
        reconnect_min: the first wait before connecting again after a drop; it doubles on each
            failure up to ``reconnect_max``, each wait drawn at random from its upper half.
        reconnect_max: the longest wait between two attempts.
        max_handshakes: connections a listener sets up at once; more are closed at once.
        source: the local address a connecting side's links leave from ("" the system's choice).
    """

    handshake_timeout: float = 10.0
    ping_interval: float | None = 5.0
    ping_timeout: float = 15.0
    max_frame_size: int = 16 * 1024 * 1024
    reconnect_min: float = 0.1
    reconnect_max: float = 10.0
    max_handshakes: int = 64
    source: str = ""


class RemoteTarget:
    """The Ref target of an actor another node registered: frames on that node's link."""

    def __init__(self, peer: Peer, actor: str) -> None:
        self.peer = peer
        self.actor = actor
        self.name = f"{actor}@{peer.node}"
        self.timer = peer.system.timer
        self.wait_reply = peer.outbox.wait_reply
        # The hot path of every tell and ask: the outbox's own methods, no frame of ours.
        #: queue a message for the remote actor (sent when the link is up), waiting for room
        self.deliver = peer.outbox.sender(actor)
        #: queue a message now, or raise MailboxFull when the link's queue is full
        self.deliver_nowait = partial(peer.outbox.deliver_nowait, to=actor)
        #: Ref.tell_many: a run of tells as TELLS frames
        self.deliver_many = partial(peer.outbox.deliver_many, to=actor)
        self.deliver_many_nowait = partial(peer.outbox.deliver_many_nowait, to=actor)

    def request_stop(self) -> None:
        """Another node's actors are not ours to stop."""
        logger.warning("%s belongs to another node: it is not stopped from here", self.name)

    async def join(self) -> BaseException | None:
        """Wait until the link to its node is closed for good."""
        await self.peer.closed.wait()
        return None

    @property
    def pid(self) -> int | None:
        """Unknown: it runs on another node."""
        return None

    @property
    def faults(self) -> LinkFaults:
        """The fault hook of the link to its node."""
        return self.peer.faults


class Peer:
    """Another node, as this system sees it: Refs to its registered actors, over a link that
    is up or down (frames queued while it is down go when it is up again, within the link's
    bounds; asks written to a link that dropped fail with ActorDead)."""

    def __init__(self, system: ActorSystem, node: str, options: LinkOptions) -> None:
        self.system = system
        self.node = node
        self.options = options
        self.faults = LinkFaults()
        self.outbox = Outbox(node, self.faults)
        self.outbox.imports = False  # another machine names no module for us to import
        self.outbox.batch_bytes = min(BATCH_BYTES, options.max_frame_size // 2)
        self.outbox.tells_frames = True
        self.closed = anyio.Event()
        self._up = anyio.Event()
        self._channel: TLSChannel | None = None
        self._refs: dict[str, Ref] = {}
        self._pong = anyio.Event()
        self._running = anyio.Lock()  # one connection at a time carries the outbox
        self._unknown: set[str] = set()  # names it told that are not registered here
        self._registered = system.registered

    def ref(self, name: str) -> Ref:
        """A Ref to the actor the node registered as ``name`` (the same Ref every time)."""
        ref = self._refs.get(name)
        if ref is None:
            ref = self._refs[name] = Ref(RemoteTarget(self, name))
        return ref

    @property
    def connected(self) -> bool:
        """Whether the link is up now."""
        return self._channel is not None

    async def wait_connected(self) -> None:
        """Wait until the link is up (at once when it is)."""
        await self._up.wait()

    def cut(self) -> None:
        """Cut the link now, as a drop would (the connecting side connects again)."""
        if self._channel is not None:
            self._channel.cut()

    def close(self) -> None:
        """Close for good: queued and waiting asks fail with ActorDead."""
        if self.closed.is_set():
            return
        self.outbox.close()
        self.cut()
        self.closed.set()

    # -- one connection ----------------------------------------------------------------------

    async def run(self, channel: TLSChannel) -> None:
        """Carry frames over ``channel`` (past its hello) until it drops or is cut."""
        if self.closed.is_set():
            channel.close()
            return
        if self._channel is not None:
            # The node connected again: its old connection is dead, whether it knows or not.
            self._channel.cut()
        async with self._running:
            await self._carry(channel)

    async def _carry(self, channel: TLSChannel) -> None:
        self._channel = channel
        self._up.set()
        logger.info("link to node %r is up", self.node)
        try:
            async with anyio.create_task_group() as task_group:
                if self.options.ping_interval:
                    task_group.start_soon(self._ping, channel)
                await pump(
                    channel,
                    self.outbox,
                    self._on_frame,
                    self._on_bad_frame,
                    self.options.max_frame_size,
                    self._on_tells,
                )
                task_group.cancel_scope.cancel()
        except Exception:  # a bug: it ends this link, never the system that runs it
            logger.exception("the link to node %r failed", self.node)
        finally:
            if self._channel is channel:
                self._channel = None
                self._up = anyio.Event()
            self.outbox.lose_written()
            why = f": {channel.error}" if channel.error is not None else ""
            logger.warning("link to node %r is down%s", self.node, why)
            channel.close()

    async def _ping(self, channel: TLSChannel) -> None:
        ident = 0
        interval, timeout = self.options.ping_interval or math.inf, self.options.ping_timeout
        while True:
            await anyio.sleep(interval)
            ident += 1
            self._pong = anyio.Event()
            self.outbox.control(Kind.PING, ident, None)
            with anyio.move_on_after(timeout):
                await self._pong.wait()
            if not self._pong.is_set():
                logger.error(
                    "node %r did not answer a ping within %.1f s: cutting its link", self.node, timeout
                )
                channel.cut()
                return

    def _on_bad_frame(self, exc: BadFrame, frame: Frame | None) -> None:
        logger.error("node %r sent a bad frame (%s): cutting its link", self.node, exc)
        self.cut()

    def _on_frame(self, frame: Frame) -> Awaitable[None] | None:
        """Handle a frame from the peer; return an awaitable only when that must wait."""
        kind, outbox = frame.kind, self.outbox
        if kind in (_TELL, _ASK):
            message = decode_value(frame.type, frame.body, False)
            reply: Reply | None = None
            if kind == _ASK:
                if len(outbox.control_buffer) > LIMIT_BYTES:
                    # It asks and does not read the answers: do not hold them for it.
                    raise BadFrame(f"{len(outbox.control_buffer)} bytes of answers are waiting for it")
                reply = WireReply(outbox, frame.id)
            target = self._registered(frame.to)
            if target is None:
                if reply is not None:
                    reply.reject(ActorDead(f"no actor is registered as {frame.to!r} on this node"))
                elif frame.to not in self._unknown and len(self._unknown) < 100:
                    self._unknown.add(frame.to)  # once per name: a peer cannot flood the log
                    logger.warning("node %r told %r, which is not registered here", self.node, frame.to)
                return None
            cell = target._target
            if cell.__class__ is LocalCell:
                link = cell.link
                if link is not outbox and (link is None or link.reader is None):
                    # Idle, it reads this link itself: one scheduler pass less per message.
                    cell.link = outbox
            try:
                cell.deliver_nowait(message, reply)
            except MailboxFull:
                return _deliver(target, message, reply)
            except ActorDead as exc:
                if reply is not None:
                    reply.reject(exc)
        elif outbox.settle(frame):
            pass
        elif kind == Kind.PING:
            outbox.control(Kind.PONG, frame.id, None)
        elif kind == Kind.PONG:
            self._pong.set()
        else:
            raise BadFrame(f"unexpected frame kind {kind} on a network link")
        return None

    def _on_tells(self, batch: Batch) -> Awaitable[None] | None:
        """Deliver a TELLS frame's messages, in order, into the mailbox at once (what does not
        fit waits for room, as a single tell would)."""
        messages = decode_values(batch.type, batch.body, False)
        target = self._registered(batch.to)
        if target is None:
            if batch.to not in self._unknown and len(self._unknown) < 100:
                self._unknown.add(batch.to)  # once per name: a peer cannot flood the log
                logger.warning("node %r told %r, which is not registered here", self.node, batch.to)
            return None
        cell = target._target
        if cell.__class__ is not LocalCell:
            for index, message in enumerate(messages):
                try:
                    cell.deliver_nowait(message, None)
                except MailboxFull:
                    return _deliver_each(target, messages, index)
                except ActorDead:
                    pass
            return None
        link = cell.link
        if link is not self.outbox and (link is None or link.reader is None):
            cell.link = self.outbox  # idle, it reads this link itself (see _on_frame)
        try:
            taken = cell.deliver_some_nowait(messages, 0)
        except ActorDead:
            return None
        return None if taken == len(messages) else _deliver_rest(cell, messages, taken)


_TELL: Final = int(Kind.TELL)
_ASK: Final = int(Kind.ASK)


async def _deliver_rest(cell: LocalCell, messages: list[Any], start: int) -> None:
    """Deliver the rest of a TELLS frame's messages as room comes (the link waits meanwhile:
    back pressure), as many at a time as fit."""
    while start < len(messages):
        await cell.wait_room()
        try:
            start += cell.deliver_some_nowait(messages, start)
        except ActorDead:
            return


async def _deliver_each(target: Ref, messages: list[Any], start: int) -> None:
    """Deliver a TELLS frame's messages one by one, to a target that is not a local actor."""
    for message in messages[start:]:
        await _deliver(target, message, None)


async def _deliver(target: Ref, message: Any, reply: Reply | None) -> None:
    """Deliver once the mailbox has room (the link waits meanwhile: back pressure)."""
    try:
        await target._target.deliver(message, reply)
    except ActorDead as exc:
        if reply is not None:
            reply.reject(exc)


# -- the hello -------------------------------------------------------------------------------


async def send_hello(channel: TLSChannel, node: str) -> None:
    """Send our hello."""
    await _send(channel, Kind.HELLO, Hello(PROTOCOL_VERSION, node))


async def refuse(channel: TLSChannel, reason: str) -> None:
    """Tell the peer why it is refused (instead of our hello), as far as it listens."""
    await _send(channel, Kind.FAIL, Failure("refused", "LinkRefused", reason))


async def _send(channel: TLSChannel, kind: int, body: Any) -> None:
    buffer = bytearray()
    append_frame(buffer, kind, 0, body)
    data = memoryview(buffer)
    while data:
        try:
            data = data[channel.send(data) :]
        except BlockingIOError:
            await anyio.wait_writable(channel.sock)
    await channel.flush()


async def read_hello(channel: TLSChannel, peer: str) -> Hello:
    """The peer's hello; whatever it sent after it is left for the link.

    Raises:
        LinkRefused: it sent a refusal, or no hello, or one of another protocol version.
    """
    data = b""
    while True:
        if len(data) >= HEADER_SIZE:
            size = int.from_bytes(data[:HEADER_SIZE], "big")
            if size > HELLO_LIMIT:
                raise LinkRefused(f"{peer} did not say hello ({size}-byte frame)")
            if len(data) >= HEADER_SIZE + size:
                break
        chunk = await channel.receive_some()
        if not chunk:
            raise LinkRefused(f"{peer} closed the connection before its hello")
        data += chunk
    end = HEADER_SIZE + size
    channel.unread(data[end:])
    try:
        frame = decode_frame(data[HEADER_SIZE:end])
        if frame.kind == Kind.FAIL:
            failure = decode_value("actors._wire:Failure", frame.body)
            raise LinkRefused(f"{peer} refused the link: {failure.message}")
        if frame.kind != Kind.HELLO:
            raise LinkRefused(f"{peer} did not say hello (frame kind {frame.kind})")
        hello: Hello = decode_value("actors._net:Hello", frame.body)
    except BadFrame as exc:
        raise LinkRefused(f"{peer} sent a bad hello: {exc}") from None
    if hello.version != PROTOCOL_VERSION:
        raise LinkRefused(
            f"{peer} speaks link protocol version {hello.version}, this node {PROTOCOL_VERSION}"
        )
    return hello
