"""The little HTTP the API needs on top of ASGI: a parsed request, bounded bodies, JSON replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

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

    async def body(self) -> bytes:
        """The whole body, refused with 413 as soon as it exceeds the limit."""
        length = self.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ApiError(400, "BadRequest", "the Content-Length header is not a number") from None
            if declared > self._max:
                raise _too_large(self._max)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                raise _too_large(self._max)
            chunks.append(chunk)
            if not message.get("more_body", False):
                self._consumed = True
                return b"".join(chunks)

    async def json(self, kind: type[T], *, default: T | None = None) -> T:
        """Decode the body as a JSON ``kind`` (a msgspec Struct); 400 InvalidJsonRequest if it is not.

        An empty body answers ``default`` when one is given.
        """
        data = await self.body()
        if not data.strip():
            if default is not None:
                return default
            raise ApiError(400, "InvalidJsonRequest", f"this request needs a JSON body ({kind.__name__})")
        try:
            return msgspec.json.decode(data, type=kind)
        except msgspec.ValidationError as exc:
            raise ApiError(
                400, "InvalidJsonRequest", f"the {kind.__name__} body is not valid: {exc}"
            ) from None
        except msgspec.DecodeError as exc:
            raise ApiError(400, "InvalidJsonRequest", f"the body is not JSON: {exc}") from None


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


def error_response(error: ApiError) -> Response:
    """The Service Management style error body for ``error``."""
    headers = {"www-authenticate": "Bearer"} if error.status == 401 else None
    body = ErrorBody(error=ErrorDetail(code=error.code, message=error.message))
    return Response(error.status, body, headers)
