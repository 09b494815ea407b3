"""A replica's API address: the leader's API in this process, or the leader's forwarded.

While this replica leads, requests go to its own RDFE (mounted for the term). Otherwise every
request, reads and writes alike, is forwarded to the leader's address (kept in the replica
table) with the client's own credentials (replicas of one fabric share the API token); the
answer streams back as the leader gave it. With no leader (an election, or this replica still
taking over) a change is answered 503 ServiceUnavailable with Retry-After and changes nothing.
A forwarded request is never forwarded again (a replica that stopped leading answers 503).
A follower answers reads from the database itself when no leader answers them (none leads, the
leader refuses connections, or its answer does not begin within 10 s): the read API
(subscriptions, locations, hosted services, deployment slots) from the views the leader last
wrote (fabric.replica.reads), and an operation a controller ran (``GET .../operations/{id}``)
from the goal state, always; so `fabric status` and a client polling its operation go on
through an election.

A write whose forwarding broke after it was sent (the leader died answering it) answers 503
too: the change either landed whole (one database transaction) or not at all; the message says
to read it back. Remote shells (WebSockets) are not forwarded: connect to the leader.
``GET /replicas`` is answered by any replica itself: every replica's address and who leads.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

import anyio
import httpx
import msgspec

from fabric.controller.pg_store import Database, StoreUnavailable
from fabric.frontend.api import ErrorBody, ErrorDetail, Operation
from fabric.frontend.auth import token_matches
from fabric.replica import reads
from fabric.replica.registry import Leader, current_leader, replicas, stored_operation
from roles.hosts.http import answer_lifespan

log = logging.getLogger("fabric.replica")

#: the header a forwarded request carries (the forwarding replica's name)
FORWARDED_BY = b"x-fabric-forwarded-by"
#: ``GET /replicas`` (with the token) is answered by the replica itself: see ReplicasView
REPLICAS_PATH = "/replicas"
#: an operation's state, answered by a follower from the goal state (see _stored_operation)
_OPERATION_PATH = re.compile(r"^/subscriptions/[^/]{1,100}/operations/([0-9a-f]{32})$")
#: headers of one connection, never passed on
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
    }
)
#: connecting to the leader (it is on the same network; a dead one refuses or times out)
CONNECT_TIMEOUT = 2.0
#: sending a request body to the leader (a package upload may be large)
WRITE_TIMEOUT = 60.0
#: a read the stored views can answer waits this long for the leader's answer to begin
_READ_TIMEOUT = httpx.Timeout(connect=CONNECT_TIMEOUT, read=10.0, write=WRITE_TIMEOUT, pool=CONNECT_TIMEOUT)

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
#: answers a read from the stored views (fabric.replica.reads)
Fallback = Callable[[], Awaitable[None]]


class ReplicaView(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """One replica: its name, API address, and whether it leads."""

    name: str
    url: str
    leader: bool
    #: its host port (``--listen``), "" without one
    host_port: str = ""


class ReplicasView(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """``GET /replicas``: every replica, who leads (None during an election) and its epoch."""

    leader: str | None
    epoch: int | None
    replicas: list[ReplicaView]
    answered_by: str


class ClientGone(Exception):
    """The client disconnected while its body was being forwarded."""


class ReplicaFront:
    """The ASGI application at a replica's address.

    Args:
        name: this replica's name.
        token: the API token (``GET /replicas`` checks it; forwarded requests are checked by
            the leader).
        db: the replica's database pool (the replica table).
        is_leader: whether this replica leads now (its lease renewed in time).
        refresh_interval: how often the leader's address is read again.
        retry_after: the Retry-After of a 503 (seconds).
        verify: what a leader's https:// address is verified with (the cluster CA).
    """

    def __init__(
        self,
        name: str,
        token: str,
        db: Database,
        is_leader: Callable[[], bool],
        *,
        refresh_interval: float = 2.0,
        retry_after: int = 1,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.name = name
        self.token = token
        self.db = db
        self.is_leader = is_leader
        self.refresh_interval = refresh_interval
        self.retry_after = retry_after
        #: the local API while this replica leads (mounted for a term)
        self.app: Any = None
        #: the leader as last read (None: none known)
        self.leader: Leader | None = None
        self._stale = anyio.Event()
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=CONNECT_TIMEOUT, read=None, write=WRITE_TIMEOUT, pool=CONNECT_TIMEOUT
            ),
            follow_redirects=False,
            verify=verify,
        )

    @contextmanager
    def mount(self, app: Any) -> Iterator[None]:
        """Serve ``app`` here for the block (a leader's term)."""
        self.app = app
        try:
            yield
        finally:
            self.app = None

    def leader_changed(self) -> None:
        """Read the leader again now (a forward failed, or the lease changed hands)."""
        self._stale.set()

    async def watch(self) -> None:
        """Keep the leader's address fresh (every refresh_interval, or when told it changed)."""
        try:
            while True:
                try:
                    self.leader = await current_leader(self.db)
                except StoreUnavailable as exc:
                    log.debug("%s: cannot read the leader: %s", self.name, exc)  # keep the last one
                self._stale = anyio.Event()
                with anyio.move_on_after(self.refresh_interval):
                    await self._stale.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["path"] == REPLICAS_PATH and scope["method"] == "GET":
            await self._replicas(scope, send)  # answered by this replica itself, leader or not
            return
        app = self.app
        if app is not None and self.is_leader():
            await app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # try again later, at the leader
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and await self._stored_operation(scope, send):
            return
        fallback: Fallback | None = None
        if reads.serves(scope["method"], scope["path"]):  # when no leader answers: the stored views
            fallback = partial(reads.answer, self.db, self.token, self.name, scope, send)
        await self._forward(scope, receive, send, fallback)

    async def _stored_operation(self, scope: Scope, send: Send) -> bool:
        """Answer ``GET .../operations/{id}`` from the goal state when it is there (an operation
        a controller ran): a client polling its operation goes on through an election. Returns
        False when this is not such a request or the store has no such operation (forwarded)."""
        found = _OPERATION_PATH.match(scope["path"])
        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        if found is None or not token_matches(self.token, header):
            return False  # the leader answers (and refuses a wrong token)
        try:
            record = await stored_operation(self.db, found.group(1))
        except StoreUnavailable:
            return False
        if record is None:
            return False  # one RDFE finished itself: the leader knows it
        error = None
        if record.status == "Failed":
            error = ErrorDetail(code=record.error_code or "InternalError", message=record.error_message)
        view = Operation(
            id=record.request_id,
            status=cast(Any, record.status),
            http_status_code=record.http_status_code,
            error=error,
        )
        await _answer(send, 200, msgspec.json.encode(view), [(b"x-fabric-answered-by", self.name.encode())])
        return True

    async def _replicas(self, scope: Scope, send: Send) -> None:
        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        if not token_matches(self.token, header):
            body = msgspec.json.encode(
                ErrorBody(error=ErrorDetail(code="Unauthorized", message="present the API token (Bearer)"))
            )
            await _answer(send, 401, body, [(b"www-authenticate", b"Bearer")])
            return
        try:
            known = await replicas(self.db)
            leader = await current_leader(self.db)
        except StoreUnavailable as exc:
            await self._refuse(send, f"the database did not answer: {exc}")
            return
        view = ReplicasView(
            leader=leader.name if leader else None,
            epoch=leader.epoch if leader else None,
            replicas=[
                ReplicaView(
                    name=n, url=r.url, leader=leader is not None and leader.name == n, host_port=r.host_port
                )
                for n, r in known.items()
            ],
            answered_by=self.name,
        )
        await _answer(send, 200, msgspec.json.encode(view))

    async def _refuse(self, send: Send, message: str) -> None:
        body = msgspec.json.encode(ErrorBody(error=ErrorDetail(code="ServiceUnavailable", message=message)))
        await _answer(send, 503, body, [(b"retry-after", str(self.retry_after).encode())])

    async def _forward(self, scope: Scope, receive: Receive, send: Send, fallback: Fallback | None) -> None:
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _HOP]
        leader = self.leader
        why = ""
        if any(k.lower() == FORWARDED_BY for k, _ in headers):
            why = f"replica {self.name} does not lead (any more); retry"
        elif leader is None:
            why = "no controller replica leads now (an election is under way); retry"
        elif leader.name == self.name:
            why = f"replica {self.name} is taking over as leader; retry"
        if why or leader is None:
            await (fallback() if fallback is not None else self._refuse(send, why))
            return
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = leader.url + path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        headers.append((FORWARDED_BY, self.name.encode()))
        method = scope["method"]
        has_body = any(
            k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope.get("headers", [])
        )
        content = _body(receive) if has_body else b""
        # a read that can be answered from the store does not wait long for a paused leader
        timeout = None if fallback is None else _READ_TIMEOUT
        request = self.client.build_request(method, url, headers=headers, content=content, timeout=timeout)
        try:
            response = await self.client.send(request, stream=True)
        except ClientGone:
            return
        except httpx.HTTPError as exc:
            self.leader_changed()
            if fallback is not None:
                await fallback()  # the leader did not answer this read: the stored views do
            elif isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
                await self._refuse(
                    send, f"the leader {leader.name} cannot be reached ({type(exc).__name__}); retry"
                )
            else:
                await self._refuse(
                    send,
                    f"the leader {leader.name} went away while answering ({type(exc).__name__}); a change "
                    "it was making landed whole or not at all: read it back before retrying",
                )
            return
        try:
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError:
                log.warning("%s: the leader's answer to %s %s broke off", self.name, method, scope["path"])
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _answer(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": out + (headers or [])})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
