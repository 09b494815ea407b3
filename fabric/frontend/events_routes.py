"""The events API: the fabric's timeline, paged or streamed (fabric.controller.events).

Routes (the same token as the rest of the API; ``?pool=`` picks a machine pool, by default the
pool of ``?service=`` or the fabric's only pool)::

    GET /events[?after=N&limit=M&service=S&role=R&instance=I&kind=K&wait=SECONDS]  -> EventPage
    GET /events/stream[?after=N&tail=T&service=S&role=R&instance=I&kind=K]        -> text/event-stream

``limit`` is 1..1000 (100 by default), ``wait`` 0..60 seconds: with nothing after ``after``
yet, the page waits that long for a first event (a long poll). The stream sends every event
as ``event: <kind>`` with the Event as JSON and its seq as the id, from ``after`` (or the
``Last-Event-ID`` header a reconnecting browser sends) on, then each new one as it happens;
``tail`` (0..1000) starts no earlier than the last T events.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from fabric.controller.events import EVENT_KINDS, MAX_PAGE, MAX_WAIT, EventLog, ListEvents, OpenEventLog
from fabric.frontend._http import Request, Response
from fabric.frontend.api import ApiError, not_found
from fabric.frontend.chaos_routes import _pool as pool_of
from fabric.frontend.ffe import Forward
from fabric.frontend.streams import KEEPALIVE_SECONDS, EventStream, Message, stream_slots

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe

_logs: weakref.WeakKeyDictionary[Any, dict[str, EventLog]] = weakref.WeakKeyDictionary()
_encoder = msgspec.json.Encoder()


async def route(rdfe: Rdfe, r: Request, rest: list[str]) -> Response:
    """Answer one ``/events...`` request."""
    match rest:
        case []:
            rdfe._allow(r, "GET")
            query = query_of(r)
            log = await event_log(rdfe, r)
            return Response(200, await log.wait_page(query))
        case ["stream"]:
            rdfe._allow(r, "GET")
            query = query_of(r, stream=True)
            log = await event_log(rdfe, r)
            if "tail" in r.query:  # at most the last N events kept, then each new one
                tail = _number(r, "tail", 0, 0, MAX_PAGE)
                query = msgspec.structs.replace(query, after=max(query.after, log.last_seq - tail))
            return EventStream(r._receive, lambda: follow(log, query), stream_slots(rdfe))
    raise not_found(f"no events API at {r.path}; see fabric/frontend/events_routes.py")


async def event_log(rdfe: Rdfe, r: Request) -> EventLog:
    """The event log of the request's pool (asked of its controller once, then kept)."""
    pool = await pool_of(rdfe, r, r.query.get("service"))
    logs = _logs.setdefault(rdfe, {})
    found = logs.get(pool)
    if found is None:
        # Answered in-process with the EventLog object itself.
        found = logs[pool] = await rdfe.ask_ffe(Forward(pool=pool, command=OpenEventLog()))
    return found


async def follow(log: EventLog, query: ListEvents) -> AsyncIterator[Message | None]:
    """Every matching event after ``query.after``, then each new one; None when idle a while."""
    query = msgspec.structs.replace(query, wait=KEEPALIVE_SECONDS, limit=MAX_PAGE)
    while True:
        page = await log.wait_page(query)
        if not page.events:
            yield None
        for event in page.events:
            yield (event.kind, _encoder.encode(event).decode(), str(event.seq))
        query = msgspec.structs.replace(query, after=page.next)


def query_of(r: Request, *, stream: bool = False) -> ListEvents:
    """The ListEvents a request's query string asks for (400 for a value out of range)."""
    after = _number(r, "after", 0, 0, 2**62)
    if stream and "after" not in r.query:
        last = r.headers.get("last-event-id", "")
        after = int(last) if last.isascii() and last.isdigit() and len(last) < 19 else after
    kind = r.query.get("kind")
    if kind is not None and kind not in EVENT_KINDS:
        raise ApiError(400, "InvalidQueryParameterValue", f"kind must be one of: {', '.join(EVENT_KINDS)}")
    return ListEvents(
        after=after,
        limit=_number(r, "limit", 100, 1, MAX_PAGE),
        service=r.query.get("service") or None,
        role=r.query.get("role") or None,
        instance=r.query.get("instance") or None,
        kind=kind,
        wait=0.0 if stream else float(_number(r, "wait", 0, 0, int(MAX_WAIT))),
    )


def _number(r: Request, name: str, default: int, low: int, high: int) -> int:
    text = r.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) < 19 and low <= int(text) <= high):
        raise ApiError(
            400, "InvalidQueryParameterValue", f"{name} must be a whole number from {low} to {high}"
        )
    return int(text)
