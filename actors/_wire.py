"""The wire between processes: length-prefixed msgpack frames carrying typed messages.

A frame is a 4-byte big-endian length followed by a msgpack array
``[kind, id, type, body]``, or ``[kind, id, type, body, to]`` on a network link, where one
connection reaches every actor a node registered and ``to`` names the one a TELL or ASK is for.
``type`` names the message class (``"module:QualName"`` of a msgspec Struct) so the receiver can
decode ``body`` into the same class without a registry; an empty ``type`` means plain msgpack data.

On a network link, tells of one type to one actor that follow each other on the wire travel as
one TELLS frame, ``[TELLS, 0, type, to, [body, ...]]`` (see Batch): the receiver decodes them in
one call and puts them in the mailbox at once. The sender grows the last frame of its buffer in
place while the next tell matches it (its body array has a fixed-size count, patched).
"""

from __future__ import annotations

import importlib
import logging
import struct
import sys
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any, Final

import msgspec

logger = logging.getLogger("actors.wire")

HEADER_SIZE: Final = 4
#: Frames larger than this are refused: they are far past any sane message and usually mean a
#: desynchronised or hostile stream.
MAX_FRAME_SIZE: Final = 64 * 1024 * 1024


class Kind(IntEnum):
    """What a frame carries."""

    TELL = 0
    ASK = 1
    REPLY = 2
    FAIL = 3
    INIT = 4
    STARTED = 5
    STOP = 6
    PING = 7
    PONG = 8
    CRASHED = 9
    #: the first frame each side of a network link sends (see actors._net.Hello)
    HELLO = 10
    #: many tells of one type to one actor, in order (network links only; see Batch)
    TELLS = 11


class Frame(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A decoded frame whose body is still raw msgpack, to be decoded by its type (untracked by
    the garbage collector: it holds no container, so it can be in no cycle)."""

    kind: int
    id: int
    type: str
    body: msgspec.Raw
    #: on a network link, the registered name of the actor a TELL or ASK goes to
    to: str = ""


class Batch(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A decoded TELLS frame: the bodies of tells of one type to one actor, still raw (a msgpack
    array, decoded at once by decode_values)."""

    kind: int
    id: int
    type: str
    #: the registered name of the actor they go to
    to: str
    body: msgspec.Raw


class Failure(msgspec.Struct, frozen=True):
    """Why an ask failed, as it crosses the wire: ``kind`` is "error", "dead" or "bad-frame"."""

    kind: str
    type_name: str
    message: str
    traceback: str = ""
    #: for an error of a registered class (see actors.register_error): its wire name
    #: ("module:QualName") and fields, to rebuild it on the other side
    registered: str = ""
    fields: dict[str, Any] = {}


class Init(msgspec.Struct, frozen=True):
    """What a child needs to build its actor: the class path, its name and typed arguments."""

    target: str
    name: str
    args: list[tuple[str, msgspec.Raw]]
    kwargs: dict[str, tuple[str, msgspec.Raw]]
    has_parent: bool
    mailbox_size: int
    #: how long the child's actor may take to stop (its on_stop) before it is cut short
    stop_timeout: float = 10.0


class Started(msgspec.Struct, frozen=True):
    """The child's actor finished on_start."""

    pid: int


class BadFrame(Exception):
    """A frame could not be decoded: corrupt msgpack, unknown kind or an unknown message type."""


_encoder = msgspec.msgpack.Encoder()
_frame_decoder = msgspec.msgpack.Decoder(Frame)
_batch_decoder = msgspec.msgpack.Decoder(Batch)
_any_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()
_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {"": _any_decoder}
#: decoders of a TELLS frame's body array, by type name
_list_decoders: dict[str, msgspec.msgpack.Decoder[list[Any]]] = {"": msgspec.msgpack.Decoder(list)}
_raws_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_type_names: dict[type, str] = {}


def type_name(value: object) -> str:
    """The wire name of a value's type: its class path for a Struct, "" for plain data."""
    kind = type(value)
    try:
        return _type_names[kind]
    except KeyError:
        name = f"{kind.__module__}:{kind.__qualname__}" if issubclass(kind, msgspec.Struct) else ""
        _type_names[kind] = name
        return name


def _decoder_for(name: str, imports: bool = True) -> msgspec.msgpack.Decoder[Any]:
    try:
        return _decoders[name]
    except KeyError:
        pass
    module_name, _, qualname = name.partition(":")
    if not imports and module_name not in sys.modules:
        # A peer on the network names no module for us to import (an import runs its code).
        raise BadFrame(f"unknown message type {name!r}: its module is not imported on this node")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise BadFrame(f"unknown message type {name!r}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, msgspec.Struct)):
        raise BadFrame(f"message type {name!r} is not a msgspec Struct")
    decoder = _decoders[name] = msgspec.msgpack.Decoder(obj)
    return decoder


def decode_value(name: str, body: msgspec.Raw | bytes | memoryview, imports: bool = True) -> Any:
    """Decode a message body of the named type; raise BadFrame if it cannot be. With
    ``imports`` false, a type whose module is not imported yet is refused, not imported."""
    decoder = _decoders.get(name) or _decoder_for(name, imports)
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadFrame(f"cannot decode a {name or 'plain'} message: {exc}") from None


def decode_values(name: str, bodies: msgspec.Raw | bytes, imports: bool = True) -> list[Any]:
    """Decode a TELLS frame's body array (messages of the named type) in one call; raise
    BadFrame if it cannot be. ``imports`` as for decode_value."""
    decoder = _list_decoders.get(name)
    if decoder is None:
        kind = _decoder_for(name, imports).type
        decoder = _list_decoders[name] = msgspec.msgpack.Decoder(list[kind])  # type: ignore[valid-type]
    try:
        return decoder.decode(bodies)
    except msgspec.DecodeError as exc:
        raise BadFrame(f"cannot decode {name or 'plain'} messages: {exc}") from None


def split_values(bodies: msgspec.Raw | bytes) -> list[msgspec.Raw]:
    """A TELLS frame's body array as one raw body per message (to handle them one by one)."""
    try:
        return _raws_decoder.decode(bodies)
    except msgspec.DecodeError as exc:
        raise BadFrame(f"malformed messages: {exc}") from None


def encode_value(value: object) -> tuple[str, msgspec.Raw]:
    """A value as a (type name, raw msgpack) pair, for arguments nested inside another message."""
    return type_name(value), msgspec.Raw(_encoder.encode(value))


def append_frame(
    buffer: bytearray, kind: int, ident: int, body: object, name: str | None = None, to: str = ""
) -> None:
    """Encode one frame at the end of ``buffer`` (in place: no intermediate copies); ``to``
    names the receiving actor on a network link."""
    start = len(buffer)
    name = type_name(body) if name is None else name
    try:
        _encoder.encode_into(
            (kind, ident, name, body, to) if to else (kind, ident, name, body), buffer, start + HEADER_SIZE
        )
    except BaseException:
        del buffer[start:]  # no half frame left behind: it would corrupt the stream
        raise
    pack_size(buffer, start, len(buffer) - start - HEADER_SIZE)


_size = struct.Struct(">I")  # a frame's length prefix
#: write a frame's length prefix into a buffer: ``pack_size(buffer, offset, size)``
pack_size = _size.pack_into
_unpack_size = _size.unpack_from


#: The bytes of a TELL frame before its body, by the body's type: a zeroed length prefix, then
#: the frame's array header, kind, id and type name; for a process link's frames and for a
#: network link's (one element more: ``to``, after the body).
_tell_heads: tuple[dict[type, bytes], dict[type, bytes]] = ({}, {})


def tell_heads(to: str) -> dict[type, bytes]:
    """The cache of TELL frame heads for frames with or without ``to`` (see tell_head)."""
    return _tell_heads[1 if to else 0]


def tell_head(body: object, to: str) -> bytes:
    """The first bytes of a TELL frame carrying ``body`` (its length prefix zeroed), cached:
    with the body and the encoded ``to`` after them, the frame append_frame would write."""
    array = b"\x95" if to else b"\x94"  # msgpack's fixarray of 5 or 4 elements
    encode = _encoder.encode
    head = bytes(HEADER_SIZE) + array + encode(Kind.TELL) + encode(0) + encode(type_name(body))
    tell_heads(to)[type(body)] = head
    return head


#: the tag of a TELLS frame: its array header and kind, the first bytes of its payload
TELLS_TAG: Final = b"\x95" + bytes([Kind.TELLS])
#: the size of a TELLS frame's count (msgpack's array 32 header: 0xdd, then 4 bytes)
pack_count = pack_size


def batch_head(body: object, to: str) -> bytes:
    """The first bytes of a TELLS frame to ``to`` whose first body is ``body``, up to its body
    array's header (the length prefix and the count zeroed): the bodies follow."""
    encode = _encoder.encode
    return (
        bytes(HEADER_SIZE) + TELLS_TAG + encode(0) + encode(type_name(body)) + encode(to) + b"\xdd" + bytes(4)
    )


def tells_prefix(body: object, to: str) -> bytes:
    """The first bytes of a TELLS frame to ``to`` whose bodies are of ``body``'s type, up to
    its body array (the length prefix zeroed): an encoded list of them follows, its own array
    header included (see Ref.tell_many)."""
    return batch_head(body, to)[:-5]


#: decode a TELLS frame's envelope (its payload starts with TELLS_TAG), raising msgspec.DecodeError
decode_batch = _batch_decoder.decode


def body_encoder() -> Callable[[Any, bytearray, int], None]:
    """The function that encodes a frame's body into a bytearray at an offset (its head written)."""
    return _encoder.encode_into


def encode_to(to: str) -> bytes:
    """The encoded ``to`` element that ends a network link's frame (b"" on a process link)."""
    return _encoder.encode(to) if to else b""


#: decode a frame's envelope, raising msgspec.DecodeError (decode_frame raises BadFrame)
decode_envelope = _frame_decoder.decode


def decode_frame(data: bytes | memoryview) -> Frame:
    """Decode a frame's envelope; the body stays raw. Raises BadFrame."""
    try:
        return _frame_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BadFrame(f"malformed frame: {exc}") from None


class FrameSplitter:
    """Cuts a byte stream into frame payloads, keeping any partial frame for the next chunk."""

    __slots__ = ("_need", "_parts", "_size", "max_size")

    def __init__(self, max_size: int = MAX_FRAME_SIZE) -> None:
        self._parts: list[bytes] = []  # the start of a frame still arriving
        self._size = 0  # their length
        self._need = HEADER_SIZE  # the length that completes it (its length prefix, at first)
        #: a length prefix past this is refused (BadFrame)
        self.max_size = max_size

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add a chunk; return every complete frame payload now available, in order (see split)."""
        return list(self.split(chunk))

    def split(self, chunk: bytes) -> Iterator[bytes]:
        """Add a chunk; yield every complete frame payload now available, in order. Consume
        it all before the next chunk: the partial frame at its end is kept when it ends.

        Raises BadFrame when a length prefix is impossible; the buffered bytes are dropped then,
        because framing cannot be recovered from the middle of a stream.
        """
        if self._parts:  # a frame in pieces: joined once it is whole, not piece by piece
            self._parts.append(chunk)
            self._size += len(chunk)
            if self._size < self._need:
                return
            data = b"".join(self._parts)
            self._parts, self._size, self._need = [], 0, HEADER_SIZE
        else:
            data = chunk
        pos, end, limit, unpack = 0, len(data), self.max_size, _unpack_size
        while end - pos >= HEADER_SIZE:
            size = unpack(data, pos)[0]
            if size > limit:
                raise BadFrame(f"frame of {size} bytes exceeds the {limit}-byte limit")
            start = pos + HEADER_SIZE
            if end - start < size:
                self._need = HEADER_SIZE + size
                break
            pos = start + size
            yield data[start:pos]
        if pos < end:
            rest = data[pos:] if pos else data
            self._parts, self._size = [rest], len(rest)
