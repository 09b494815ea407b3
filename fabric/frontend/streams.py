"""Responses beyond JSON: raw bytes of any type (metrics, pages, pictures), and server-sent events
that stream until their source ends or the client goes."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import anyio

from fabric.frontend._http import Receive, Response, Send
from fabric.frontend.api import ApiError

#: a source yields None at least this often when idle: a comment line then keeps proxies and the
#: browser from closing the stream (and a client gone is noticed by the failed write)
KEEPALIVE_SECONDS: Final = 15.0

#: closing a stream's source (an async generator) once the client went: it only unsubscribes
SOURCE_CLOSE_TIMEOUT: Final = 5.0

#: one message of the stream: (event name, data, id); data has no newline (JSON is one line)
Message = tuple[str, str, str]

#: live streams one server holds open at once (each is a task and a connection); past it, 503
MAX_STREAMS: Final = 64

_slots: weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def stream_slots(owner: Any) -> anyio.CapacityLimiter:
    """The MAX_STREAMS slots of one server (``owner``: its RDFE)."""
    found = _slots.get(owner)
    if found is None:
        found = _slots[owner] = anyio.CapacityLimiter(MAX_STREAMS)
    return found


def format_message(event: str, data: str, event_id: str = "") -> bytes:
    """One SSE message in the text/event-stream wire format."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


class RawResponse(Response):
    """A body of bytes with its own content type (not JSON)."""

    __slots__ = ()

    def __init__(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, None, {**(headers or {}), "content-type": content_type})
        self.body = body

    async def send(self, send: Send, request_id: str) -> None:
        """Send it with ``x-ms-request-id`` and its length."""
        headers = [
            (b"x-ms-request-id", request_id.encode()),
            (b"content-length", str(len(self.body)).encode()),
        ]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class EventStream(Response):
    """A ``text/event-stream`` response fed by ``source()``: an async iterator of messages, or
    None for "nothing new" (sent as a keepalive comment; yield one every KEEPALIVE_SECONDS idle).

    ``source`` is called once; the stream ends when it does, when the client disconnects, or
    when the server stops (the task is cancelled).
    """

    __slots__ = ("_receive", "_slot", "_source")

    def __init__(
        self,
        receive: Receive,
        source: Callable[[], AsyncIterator[Message | None]],
        slots: anyio.CapacityLimiter | None = None,
    ) -> None:
        """Take one of ``slots`` (held until the stream ends).

        Raises:
            ApiError: 503 when every slot is taken.
        """
        if slots is not None:
            try:
                slots.acquire_nowait()
            except anyio.WouldBlock:
                raise ApiError(
                    503,
                    "ServiceUnavailable",
                    f"{slots.total_tokens:g} live streams are open already; close one",
                ) from None
        self._slot = slots
        super().__init__(
            200,
            None,
            {
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-store",
                "x-accel-buffering": "no",
            },
        )
        self._receive = receive
        self._source = source

    async def send(self, send: Send, request_id: str) -> None:
        """Stream the messages (no content-length: the body is chunked), then free the slot."""
        try:
            await self._stream(send, request_id)
        finally:
            if self._slot is not None:
                self._slot.release()

    async def _stream(self, send: Send, request_id: str) -> None:
        headers = [(b"x-ms-request-id", request_id.encode())]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async with anyio.create_task_group() as tg:

            async def until_disconnect() -> None:
                while (await self._receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(until_disconnect)
            await send({"type": "http.response.body", "body": b": stream open\n\n", "more_body": True})
            messages = self._source()
            try:
                async for message in messages:
                    body = b": keepalive\n\n" if message is None else format_message(*message)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            finally:
                aclose = getattr(messages, "aclose", None)
                if aclose is not None:
                    with anyio.move_on_after(SOURCE_CLOSE_TIMEOUT, shield=True):
                        await aclose()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()
