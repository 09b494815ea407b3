"""The little HTTP the API needs on top of ASGI: a parsed request, bounded bodies, JSON replies."""

from __future__ import annotations

import mmap
import os
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread
import msgspec

from fabric.frontend.api import ApiError, ErrorBody, ErrorDetail

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class Request:
    """One HTTP request: method, path segments, query (lower-case keys), headers, body on demand."""

    def __init__(self, scope: Scope, receive: Receive, max_body_bytes: int) -> None:
        self.method: str = scope["method"].upper()
        self.path: str = scope["path"]
        self.segments = [s for s in self.path.split("/") if s]
        query = scope.get("query_string", b"").decode("latin-1")
        self.query: dict[str, str] = {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}
        self.headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        self._receive = receive
        self._max = max_body_bytes
        self._consumed = False

    @property
    def body_left_unread(self) -> bool:
        """Whether the client sent a body we did not read (the connection cannot be reused)."""
        if self._consumed:
            return False
        return self.headers.get("content-length", "0") != "0" or "transfer-encoding" in self.headers

    @property
    def comp(self) -> str | None:
        """The ``comp`` query parameter, lower-cased (None when absent)."""
        value = self.query.get("comp")
        return None if value is None else value.lower()

    def limit_body(self, max_bytes: int) -> None:
        """Lower this request's body limit (a route whose bodies are small by nature)."""
        self._max = min(self._max, max_bytes)

    def allow_body(self, max_bytes: int) -> None:
        """Set this request's body limit to ``max_bytes`` (a route that carries a package)."""
        self._max = max_bytes

    def _check_declared(self) -> None:
        # Refused on the header alone, before a byte of the body is read.
        length = self.headers.get("content-length")
        if length is None:
            return
        if not (length.isascii() and length.isdigit()):
            raise ApiError(400, "BadRequest", "the Content-Length header is not a number")
        # The digits are counted first: a thousand-digit length is too large, not a ValueError.
        if len(length.lstrip("0")) > 18 or int(length) > self._max:
            raise _too_large(self._max)

    async def _chunk(self, size: int) -> tuple[bytes, bool]:
        """The next piece of the body and whether more follows; 413 once past the limit."""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk: bytes = message.get("body", b"")
        if size + len(chunk) > self._max:
            raise _too_large(self._max)
        more = bool(message.get("more_body", False))
        self._consumed = not more
        return chunk, more

    async def body(self) -> bytes:
        """The whole body, refused with 413 as soon as it exceeds the limit."""
        self._check_declared()
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            chunk, more = await self._chunk(size)
            size += len(chunk)
            chunks.append(chunk)
        return b"".join(chunks)

    async def spool(self, folder: Path) -> Path:
        """Stream the body into a new owner-only file under ``folder`` (not into memory),
        refused with 413 as soon as it exceeds the limit (by its Content-Length, before
        reading). The caller removes the file."""
        self._check_declared()
        await anyio.to_thread.run_sync(partial(folder.mkdir, mode=0o700, parents=True, exist_ok=True))
        path = folder / f"{uuid.uuid4().hex}.body"
        try:
            async with await anyio.open_file(path, "xb", opener=partial(os.open, mode=0o600)) as out:
                size, more = 0, True
                while more:
                    chunk, more = await self._chunk(size)
                    size += len(chunk)
                    await out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    async def json(self, kind: type[T], *, default: T | None = None) -> T:
        """Decode the body as a JSON ``kind`` (a msgspec Struct); 400 InvalidJsonRequest if it is not.

        An empty body answers ``default`` when one is given.
        """
        return _decode(await self.body(), kind, default)

    async def json_spooled(self, kind: type[T], folder: Path) -> T:
        """``json`` for a large body (a package): streamed to a file under ``folder`` and
        decoded from it in a worker thread, so neither the raw body sits in memory nor the
        decoding holds the event loop."""
        path = await self.spool(folder)
        # Handed over in a list, not as the thread's result: trio's idle worker thread keeps
        # its last result alive until its next job (the megabytes of a refused package).
        box: list[T] = []
        try:
            await anyio.to_thread.run_sync(_decode_file, path, kind, box)
        finally:
            await anyio.to_thread.run_sync(partial(path.unlink, missing_ok=True))
        return box.pop()


def _decode_file(path: Path, kind: type[T], box: list[T]) -> None:
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            box.append(_decode(b"", kind, None))
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            box.append(_decode(data, kind, None))


def _decode(data: bytes | mmap.mmap, kind: type[T], default: T | None) -> T:
    if len(data) < 4096 and not bytes(data).strip():  # a longer body of spaces is "not JSON"
        if default is not None:
            return default
        raise ApiError(400, "InvalidJsonRequest", f"this request needs a JSON body ({kind.__name__})")
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "InvalidJsonRequest", f"the {kind.__name__} body is not valid: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "InvalidJsonRequest", f"the body is not JSON: {exc}") from None
    except RecursionError:  # msgspec's bound on nesting (its decoder recurses)
        raise ApiError(400, "InvalidJsonRequest", "the body's JSON is nested too deeply") from None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestBodyTooLarge", f"the request body is over the limit of {limit} bytes")


class Response:
    """A status, an optional JSON body, and headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = b"" if body is None else _encoder.encode(body)
        self.headers = headers or {}

    async def send(self, send: Send, request_id: str) -> None:
        """Send the response, with ``x-ms-request-id`` as every Service Management response has."""
        headers = [
            (b"x-ms-request-id", request_id.encode()),
            (b"content-length", str(len(self.body)).encode()),
        ]
        if self.body:
            headers.append((b"content-type", b"application/json; charset=utf-8"))
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


#: an error message longer than this keeps its start and end (it quotes a very long name)
MAX_ERROR_CHARS = 1000


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` as one line a client can show: control characters escaped (a name taken from a
    path may carry a newline or a NUL) and at most about ``limit`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > limit:
        half = limit // 2
        text = f"{text[:half]} ... ({len(text) - 2 * half} characters cut) ... {text[-half:]}"
    return text


#: what a 503 tells a client to wait before trying again
RETRY_AFTER_SECONDS = 1


def error_response(error: ApiError) -> Response:
    """The Service Management style error body for ``error`` (its message made one line)."""
    headers = {"www-authenticate": "Bearer"} if error.status == 401 else None
    if error.status == 503:  # unavailable for now (an election, the database away, no pool)
        headers = {"retry-after": str(RETRY_AFTER_SECONDS)}
    body = ErrorBody(error=ErrorDetail(code=error.code, message=one_line(error.message)))
    return Response(error.status, body, headers)
