"""A link: one connection between two processes, carrying frames both ways, with fault hooks."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Final, Literal

import anyio
import anyio.lowlevel
import msgspec

from ._errors import (
    ActorDead,
    ActorError,
    MailboxFull,
    rebuild_registered,
    registered_class,
    registered_fields,
    wire_name,
)
from ._loopcalls import loop_calls
from ._mailbox import AwaitedReply, Reply, Signal, new_event
from ._reader import Dispatch, DispatchTells, LinkReader, LinkSocket
from ._wire import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    BadFrame,
    Failure,
    Frame,
    Kind,
    append_frame,
    batch_head,
    body_encoder,
    decode_value,
    encode_to,
    pack_count,
    pack_size,
    tell_head,
    tell_heads,
    tells_prefix,
)

logger = logging.getLogger("actors.link")

#: A tell waits for the writer once this many bytes are queued: batches frames, bounds memory.
FLUSH_BYTES: Final = 64 * 1024
#: tell_nowait refuses (MailboxFull) once this many bytes are queued.
LIMIT_BYTES: Final = 1024 * 1024

Direction = Literal["out", "in", "both"]


@dataclass
class _Rule:
    drop: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    cut: bool = False


class LinkFaults:
    """The fault hook of a link: drop, delay or cut frames, per direction.

    "out" is towards the child, "in" is from it. Off by default; while off, the link pays one
    attribute test per frame. Faults persist across restarts of the child.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.active = False
        self._rules: dict[str, _Rule] = {"out": _Rule(), "in": _Rule()}
        self._random = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        """Draw drops and jitter from a generator seeded with ``seed`` from now on (None: from
        fresh entropy), so that a seeded chaos run loses the same frames each time."""
        self._random.seed(seed)

    def _each(self, direction: Direction) -> list[_Rule]:
        if direction not in ("out", "in", "both"):
            raise ValueError(f"direction must be 'out', 'in' or 'both', not {direction!r}")
        return list(self._rules.values()) if direction == "both" else [self._rules[direction]]

    def drop(self, probability: float, direction: Direction = "both") -> None:
        """Lose each frame with this probability (0 to 1)."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"drop probability must be between 0 and 1, not {probability}")
        for rule in self._each(direction):
            rule.drop = probability
        self._refresh()

    def delay(self, seconds: float, jitter: float = 0.0, direction: Direction = "both") -> None:
        """Hold each frame for ``seconds`` plus a uniform random ``[0, jitter)``; order may change."""
        if seconds < 0 or jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        for rule in self._each(direction):
            rule.delay, rule.jitter = seconds, jitter
        self._refresh()

    def cut(self, direction: Direction = "both") -> None:
        """Lose every frame (a partition) until cleared."""
        for rule in self._each(direction):
            rule.cut = True
        self._refresh()

    def clear(self, direction: Direction = "both") -> None:
        """Remove every fault in that direction."""
        for key in ("out", "in") if direction == "both" else (direction,):
            self._rules[key] = _Rule()
        self._refresh()

    def _refresh(self) -> None:
        self.active = any(r.cut or r.drop or r.delay or r.jitter for r in self._rules.values())

    def decide(self, direction: Literal["out", "in"]) -> float | None:
        """None: lose the frame; otherwise the delay before it goes on (0.0: at once)."""
        rule = self._rules[direction]
        if rule.cut or (rule.drop and self._random.random() < rule.drop):
            return None
        return rule.delay + (self._random.uniform(0.0, rule.jitter) if rule.jitter else 0.0)


class WireReply(Reply):
    """Sends the answer to an ask back across the link it came from."""

    __slots__ = ("_ident", "_outbox")

    def __init__(self, outbox: Outbox, ident: int) -> None:
        self._outbox = outbox
        self._ident = ident

    def resolve(self, value: Any) -> None:
        """Send a REPLY frame."""
        self._outbox.control(Kind.REPLY, self._ident, value)

    def reject(self, error: BaseException) -> None:
        """Send a FAIL frame describing the error."""
        self._outbox.control(Kind.FAIL, self._ident, describe_failure(error))


def describe_failure(error: BaseException) -> Failure:
    """An exception as it crosses the wire; a registered one (the handler's own, or the cause
    of an ActorError) with its class and fields."""
    if isinstance(error, ActorDead):
        return Failure("dead", "ActorDead", str(error))
    cause = error.__cause__ if isinstance(error, ActorError) else error
    if not isinstance(error, ActorError):
        error = ActorError.from_exception(error)
    registered, fields = _registered(cause)
    return Failure("error", error.type_name, error.message, error.traceback, registered, fields)


def _registered(error: BaseException | None) -> tuple[str, dict[str, Any]]:
    """The wire name and fields of a registered exception; ("", {}) for any other."""
    kind = None if error is None else registered_class(type(error))
    if kind is None:
        return "", {}
    fields = {name: getattr(error, name, None) for name in registered_fields(kind) or ()}
    try:
        _field_check.encode(fields)
    except (TypeError, ValueError):  # not plain data: it crosses as an ActorError alone
        logger.warning("%s has fields that cannot cross a link: %r", kind.__qualname__, fields)
        return "", {}
    return wire_name(kind), fields


_field_check = msgspec.msgpack.Encoder()


def rebuild_failure(failure: Failure, imports: bool = True) -> BaseException:
    """The exception a Failure from the wire stands for: ActorDead, or an ActorError whose
    ``__cause__`` is the registered exception the handler raised (see ActorError.caused_by).
    ``imports``: whether its class's module may be imported to find it."""
    if failure.kind == "dead":
        return ActorDead(failure.message)
    error = ActorError(failure.type_name, failure.message, failure.traceback)
    if failure.registered:
        error.__cause__ = rebuild_registered(failure.registered, failure.message, failure.fields, imports)
    return error


class Outbox:
    """Frames waiting to be written to a peer, and the asks waiting for its answers.

    It outlives a link: frames queued while a child restarts go to the next incarnation.
    """

    def __init__(self, name: str, faults: LinkFaults) -> None:
        self.name = name
        self.faults = faults
        self.buffer = bytearray()
        self.control_buffer = bytearray()
        self.pending: dict[int, Reply] = {}
        self.closed = False
        self._next_id = 1
        self._queued_ask_id = 0
        self._written_ask_id = 0
        self._drained: Signal = anyio.Event()
        self._wake: Signal | None = None
        self._delayed: Callable[[float, Callable[[], None]], None] | None = None
        #: Tells to one actor (network links) that follow each other grow one TELLS frame up to
        #: this many bytes (0: one frame per tell; see actors._wire).
        self.batch_bytes = 0
        # The TELLS frame at the end of the buffer that the next tell may join: its head (the
        # key: one object per receiver and type), where it starts and stops (-1: sealed, none
        # may join), and how many tells it has. Its length prefix and count are written when it
        # is sealed: before the buffer is read (take, _flush_now) or another one begins.
        self._batch_head = b""
        self._batch_start = 0
        self._batch_stop = -1
        self._batch_count = 0
        #: A non-blocking send on the raw socket, set while a link runs: lets an ask or a reply
        #: leave at once instead of waking the writer task (a scheduler round trip per frame).
        self.direct_send: Callable[[bytes | bytearray], int] | None = None
        #: Whether the peer takes TELLS frames (see actors._wire): Ref.tell_many sends a run of
        #: tells as one; without, a frame each.
        self.tells_frames = False
        self._tells_prefixes: dict[str, dict[type, bytes]] = {}  # by receiver, then type
        self._tells_size: dict[type, float] = {}  # encoded bytes a message, by type, lately
        self._encode_into = body_encoder()
        #: The reading end of the link while one runs: an asker may read its answer itself.
        self.reader: LinkReader | None = None
        #: Whether a frame may name a module to import for its type (not on a network link).
        self.imports = True
        # The backend's own: anyio's looks the backend up on every tell (a third of its cost).
        self._checkpoint_if_cancelled = loop_calls().checkpoint_if_cancelled

    # -- producers ---------------------------------------------------------------------------

    async def deliver(self, message: Any, reply: Reply | None, to: str = "") -> None:
        """Queue a TELL (or an ASK whose answer goes to ``reply``), waiting while the buffer is full.

        ``to`` names the receiving actor on a network link (see actors._wire)."""
        self._queue(message, reply, to)
        if len(self.buffer) >= FLUSH_BYTES:
            await self._wait_drained()
        else:
            await self._checkpoint_if_cancelled()

    def sender(self, to: str = "") -> Callable[[Any, Reply | None], Awaitable[None]]:
        """``deliver`` for one receiver (``to``: the actor's name on a network link), with a fast
        path for a tell: its frame goes straight into the buffer, its head cached by type; on a
        network link it joins the TELLS frame the last tell to the same actor began, while
        nothing else came between (see actors._wire)."""
        heads = tell_heads(to)
        tail = encode_to(to)
        encode_into = body_encoder()
        deliver = self.deliver
        checkpoint_if_cancelled = self._checkpoint_if_cancelled
        faults = self.faults
        batch_bytes = self.batch_bytes if to else 0
        batch_heads: dict[type, bytes] = {}  # the TELLS heads of this receiver, by type

        async def send(message: Any, reply: Reply | None) -> None:
            if reply is not None or self.closed or faults.active:
                return await deliver(message, reply, to)
            buffer = self.buffer
            start = len(buffer)
            if batch_bytes:
                head = batch_heads.get(type(message)) or _new_batch_head(batch_heads, message, to)
                if start == self._batch_stop and head is self._batch_head:
                    try:
                        encode_into(message, buffer, start)
                    except BaseException:
                        del buffer[start:]
                        raise
                    self._batch_stop = stop = len(buffer)
                    self._batch_count += 1
                    if stop - self._batch_start >= batch_bytes:
                        self._seal()  # full: the next tell begins another
                else:
                    self._seal()
                    buffer += head
                    try:
                        encode_into(message, buffer, start + len(head))
                    except BaseException:
                        del buffer[start:]
                        raise
                    self._batch_head, self._batch_start, self._batch_count = head, start, 1
                    self._batch_stop = len(buffer)
            else:
                head = heads.get(type(message)) or tell_head(message, to)
                buffer += head
                try:
                    encode_into(message, buffer, start + len(head))
                except BaseException:
                    del buffer[start:]
                    raise
                buffer += tail
                pack_size(buffer, start, len(buffer) - start - HEADER_SIZE)
            if self._wake is not None:
                self._wake.set()
                self._wake = None  # (woken: the next tells need not wake it again)
            if len(buffer) >= FLUSH_BYTES:
                await self._wait_drained()
            else:
                await checkpoint_if_cancelled()

        return send

    def _seal(self) -> None:
        """Write the length prefix and count of the TELLS frame tells were joining, if any:
        none joins it from now on."""
        if self._batch_stop >= 0:
            buffer, start = self.buffer, self._batch_start
            pack_size(buffer, start, self._batch_stop - start - HEADER_SIZE)
            pack_count(buffer, start + len(self._batch_head) - 4, self._batch_count)
            self._batch_stop = -1

    def deliver_nowait(self, message: Any, reply: Reply | None, to: str = "") -> None:
        """Queue a frame at once, or raise MailboxFull / ActorDead."""
        if len(self.buffer) >= LIMIT_BYTES:
            raise MailboxFull(f"link to actor {self.name!r} has {len(self.buffer)} bytes queued; use tell()")
        self._queue(message, reply, to)

    async def deliver_many(self, messages: Iterable[Any], to: str = "") -> None:
        """Queue TELLs of ``messages`` in order, as the same deliver calls would (each waiting
        while the buffer is full): a run of one type goes as TELLS frames of up to 64 KiB, each
        encoded in one call, where the peer takes them (see Ref.tell_many)."""
        await self._checkpoint_if_cancelled()  # (a cancelled sender sends none of them)
        if self.closed:
            raise ActorDead(f"actor {self.name!r} is dead")
        if self.faults.active or not self.tells_frames:
            for message in messages:  # one frame each: the fault hook meets each on its own
                await self.deliver(message, None, to)
            return
        for _ in self._tells_frames(messages, to):
            if len(self.buffer) >= FLUSH_BYTES:
                await self._wait_drained()

    def deliver_many_nowait(self, messages: Iterable[Any], to: str = "") -> None:
        """Queue TELLs of ``messages`` in order at once, as far as the buffer has room (checked
        before each frame); raise MailboxFull (its ``sent``: how many went) when not all did,
        ActorDead when the link is closed."""
        if self.closed:
            raise ActorDead(f"actor {self.name!r} is dead")
        sent = 0
        if self.faults.active or not self.tells_frames:
            for message in messages:
                try:
                    self.deliver_nowait(message, None, to)
                except MailboxFull as exc:
                    exc.sent = sent
                    raise
                sent += 1
            return
        batch = messages if isinstance(messages, list) else list(messages)
        frames = self._tells_frames(batch, to)
        while sent < len(batch):
            if len(self.buffer) >= LIMIT_BYTES:
                raise MailboxFull(
                    f"link to actor {self.name!r} has {len(self.buffer)} bytes queued: {sent} of "
                    f"{len(batch)} messages were queued; use tell_many()",
                    sent=sent,
                )
            sent += next(frames)

    def _tells_frames(self, messages: Iterable[Any], to: str) -> Iterator[int]:
        """Append ``messages`` to the buffer as TELLS frames, a frame a step (runs of one type,
        each frame up to ``batch_bytes``, encoded in one call); yield how many each carried."""
        batch = messages if isinstance(messages, list) else list(messages)
        if not batch:
            return
        kinds = set(map(type, batch))
        runs = [batch] if len(kinds) == 1 else [list(run) for _, run in groupby(batch, type)]
        limit = self.batch_bytes or FLUSH_BYTES
        encode_into = self._encode_into
        for run in runs:
            kind = type(run[0])
            prefixes = self._tells_prefixes.get(to)
            if prefixes is None:
                prefixes = self._tells_prefixes[to] = {}
            prefix = prefixes.get(kind)
            if prefix is None:
                prefix = prefixes[kind] = tells_prefix(run[0], to)
            # Messages a frame: from the size of this type's last frame (a few, the first time).
            each = self._tells_size.get(kind, limit / 8)
            done = 0
            while done < len(run):
                count = max(1, min(len(run) - done, int(limit / each)))
                part = run[done : done + count] if done or count < len(run) else run
                buffer = self.buffer
                start = len(buffer)
                buffer += prefix
                try:
                    encode_into(part, buffer, start + len(prefix))
                except Exception:
                    del buffer[start:]  # no half frame left behind: it would corrupt the stream
                    if count == 1:
                        raise
                    each = limit  # one a frame, until the one that cannot be encoded: those
                    continue  # before it go, as with the same tells in order
                except BaseException:
                    del buffer[start:]
                    raise
                size = len(buffer) - start
                if size > 2 * limit and count > 1:  # larger messages than the last ones: halve
                    del buffer[start:]
                    each = size / (count // 2)
                    continue
                pack_size(buffer, start, size - HEADER_SIZE)
                each = self._tells_size[kind] = max(1.0, (size - len(prefix)) / count)
                done += count
                if self._wake is not None:
                    self._wake.set()
                    self._wake = None  # (woken: the next frames need not wake it again)
                yield count

    def _queue(self, message: Any, reply: Reply | None, to: str = "") -> None:
        if self.closed:
            raise ActorDead(f"actor {self.name!r} is dead")
        if reply is None:
            kind, ident = Kind.TELL, 0
        else:
            kind, ident = Kind.ASK, self._next_id
            self._next_id += 1
            self.pending[ident] = reply
            self._queued_ask_id = ident
            if isinstance(reply, AwaitedReply):
                reply.on_abandon = lambda: self._forget(ident)
        if self.faults.active:
            self._faulty(self.buffer, kind, ident, message, to)
            return
        append_frame(self.buffer, kind, ident, message, None, to)
        if self._wake is not None:
            if reply is not None:
                self._flush_now()
            else:
                self._wake.set()

    def control(self, kind: int, ident: int, body: Any) -> None:
        """Queue a control frame (replies, pings, stop), written before ordinary messages."""
        if self.faults.active:
            self._faulty(self.control_buffer, kind, ident, body)
            return
        append_frame(self.control_buffer, kind, ident, body)
        if self._wake is not None:
            self._flush_now()

    def _flush_now(self) -> None:
        """Write what is queued straight to the socket; only called while the writer is idle,
        so no partial write of the writer's can be interleaved with ours."""
        assert self._wake is not None
        self._seal()  # (the buffer may be cut: no tell may grow a frame that left)
        if self.direct_send is not None:
            control, buffer = self.control_buffer, self.buffer
            if control and buffer:
                control += buffer  # (one write, control frames first)
                self._clear_buffer()
            data = control or buffer
            try:
                sent = self.direct_send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # the writer will meet the same error and end the link
            if sent:
                self._written_ask_id = self._queued_ask_id
                if data is buffer:
                    if sent < len(buffer):
                        # The rest of a frame cut short: it goes first (with the control
                        # frames, which are written first), or a control frame would land in
                        # its middle.
                        control += buffer[sent:]
                    self._clear_buffer()
                else:
                    del control[:sent]
                if not control:
                    return
        self._wake.set()

    def send_ordered(self, kind: int, ident: int, body: Any) -> None:
        """Queue a control frame behind the ordinary frames already queued (e.g. a crash report
        must not overtake the last messages the actor sent)."""
        append_frame(self.buffer, kind, ident, body)
        if self._wake is not None:
            self._wake.set()

    def _forget(self, ident: int) -> None:
        self.pending.pop(ident, None)

    def _faulty(self, buffer: bytearray, kind: int, ident: int, body: Any, to: str = "") -> None:
        delay = self.faults.decide("out")
        if delay is None:
            return
        if delay == 0.0 or self._delayed is None:
            append_frame(buffer, kind, ident, body, None, to)
            if self._wake is not None:
                self._wake.set()
            return

        def later() -> None:
            append_frame(buffer, kind, ident, body, None, to)
            if self._wake is not None:
                self._wake.set()

        self._delayed(delay, later)

    async def wait_reply(self, reply: AwaitedReply) -> None:
        """Wait for the answer to an ask sent through this outbox, reading it off the link
        ourselves when nobody else is reading (one scheduler pass instead of two).

        An answer that is already there is taken without yielding to other tasks: the reader
        yields every few reads that did not wait (see LinkReader.read_once), which bounds how
        long a task asking in a loop can keep the others waiting.
        """
        reader = self.reader
        if reader is not None:
            held = reader.holds()  # an actor that reads its link, asking its peer
            if held or reader.borrow():
                reply.on_settle = reader.interrupt  # the ask timer must wake us
                try:
                    # (A read that must wait for room in a mailbox hands the reading back.)
                    while not reply.settled and not reader.ended and reader.holds():
                        await reader.read_once()
                finally:
                    reply.on_settle = None
                    if not held:
                        reader.give_back()
                if reply.settled:
                    return
        await reply.wait()

    def _clear_buffer(self) -> None:
        """Empty the buffer (its frames taken for the socket, or lost with a closed outbox) and
        let the senders waiting for room go on: the one place it is emptied, so that no way of
        emptying it (the writer, a direct send, the end) can leave them waiting."""
        self.buffer.clear()
        self._drained.set()

    async def _wait_drained(self) -> None:
        if self.closed:  # (its _drained was set for good: a new one would never be)
            raise ActorDead(f"actor {self.name!r} is dead")
        if self._drained.is_set():
            self._drained = new_event()
        await self._drained.wait()
        if self.closed:
            raise ActorDead(f"actor {self.name!r} is dead")

    # -- the writer side ---------------------------------------------------------------------

    async def take(self) -> bytes:
        """Wait for queued frames and take them all, control frames first."""
        while not (self.buffer or self.control_buffer):
            self._wake = new_event()
            try:
                await self._wake.wait()
            finally:
                # (also when the writer is cancelled, its link ending: a wake left behind would
                # tell the next link's producers that its writer is idle while it writes, and
                # they would write into the middle of its frames)
                self._wake = None
        self._seal()  # its frames are on their way: none of them grows any more
        data = bytes(self.control_buffer + self.buffer) if self.control_buffer else bytes(self.buffer)
        self.control_buffer.clear()
        self._clear_buffer()
        self._written_ask_id = self._queued_ask_id
        return data

    def answer(self, frame: Frame, value: Any) -> None:
        """Route a REPLY (value) or FAIL (an exception) to the ask waiting for it."""
        reply = self.pending.pop(frame.id, None)
        if reply is None:
            return  # the asker gave up already
        if isinstance(value, BaseException):
            reply.reject(value)
        else:
            reply.resolve(value)

    def settle(self, frame: Frame) -> bool:
        """Handle a REPLY or FAIL from the peer (an answer to one of our asks, or a complaint
        about a frame of ours); False for any other kind of frame."""
        if frame.kind == Kind.REPLY:
            self.answer(frame, decode_value(frame.type, frame.body, self.imports))
            return True
        if frame.kind == Kind.FAIL:
            failure = decode_value("actors._wire:Failure", frame.body)
            if frame.id:
                self.answer(frame, rebuild_failure(failure, self.imports))
            else:
                logger.warning("the peer of link %r reported: %s", self.name, failure.message)
            return True
        return False

    def lose_written(self) -> None:
        """The peer is gone: asks already written will never be answered."""
        for ident in [i for i in self.pending if i <= self._written_ask_id]:
            self.pending.pop(ident).reject(ActorDead(f"actor {self.name!r} died before answering"))
        self.control_buffer.clear()

    def close(self) -> None:
        """No peer will ever read this again: fail every waiting ask and every waiting sender."""
        self.closed = True
        self._written_ask_id = self._queued_ask_id
        self.lose_written()
        self._batch_stop = -1
        self._clear_buffer()  # (the senders waiting for room raise ActorDead)


def _new_batch_head(heads: dict[type, bytes], message: Any, to: str) -> bytes:
    head = heads[type(message)] = batch_head(message, to)
    return head


async def pump(
    sock: LinkSocket,
    outbox: Outbox,
    on_frame: Dispatch,
    on_bad_frame: Callable[[BadFrame, Frame | None], None],
    max_frame_size: int = MAX_FRAME_SIZE,
    on_tells: DispatchTells | None = None,
) -> None:
    """Run one link over a connected socket (or a TLS session over one, see actors._tls):
    write the outbox, read frames into ``on_frame`` (TELLS frames into ``on_tells``: a
    network link's; none on a process link); frames past ``max_frame_size`` are bad.

    Returns when the peer closes the connection (EOF) or it breaks. The socket is used raw
    and non-blocking (try first, wait for readiness only when it would block): each skipped
    scheduler round trip is measurable on the ask latency. While it runs, ``outbox.reader``
    lets an asker read its answer off the socket itself (see LinkReader).
    """
    sock.setblocking(False)

    async def writer() -> None:
        try:
            while True:
                data = memoryview(await outbox.take())
                while data:
                    try:
                        data = data[sock.send(data) :]
                    except BlockingIOError:
                        await anyio.wait_writable(sock)
        except OSError:
            pass  # the reader sees the same breakage as EOF and ends the link

    def send_later(delay: float, action: Callable[[], None]) -> None:
        async def run() -> None:
            await anyio.sleep(delay)
            action()

        task_group.start_soon(run)

    async with anyio.create_task_group() as task_group:
        reader = LinkReader(
            sock, on_frame, on_bad_frame, outbox.faults, task_group.start_soon, max_frame_size, on_tells
        )
        outbox._delayed = send_later
        outbox.direct_send = sock.send
        outbox.reader = reader
        task_group.start_soon(writer)
        try:
            await reader.run()
        finally:
            outbox._delayed = None
            outbox.direct_send = None
            outbox.reader = None
            reader.close()
        task_group.cancel_scope.cancel()


def report_bad_frame(outbox: Outbox, exc: BadFrame, frame: Frame | None) -> None:
    """Log a frame that could not be understood and tell the peer, without dying of it."""
    logger.warning("link %r: %s", outbox.name, exc)
    ident = frame.id if frame is not None and frame.kind == Kind.ASK else 0
    outbox.control(Kind.FAIL, ident, Failure("bad-frame", "BadFrame", str(exc)))
