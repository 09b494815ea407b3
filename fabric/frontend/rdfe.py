"""RDFE: the HTTP Service Management API of the fabric, an ASGI app served by hypercorn.

Routes (every one needs ``Authorization: Bearer <token>``, the token in ``<state>/token``)::

    GET    /subscriptions
    GET    /subscriptions/{sub}
    GET    /subscriptions/{sub}/locations
    GET    /subscriptions/{sub}/operations/{request-id}
    GET    /subscriptions/{sub}/services/hostedservices[?embed-detail=true]
    POST   /subscriptions/{sub}/services/hostedservices                  CreateHostedService
    GET    .../hostedservices/{service}[?embed-detail=true]
    PUT    .../hostedservices/{service}                                  UpdateHostedService
    DELETE .../hostedservices/{service}                                  (no deployments left)
    POST   .../hostedservices/{service}[?comp=swap]                      Swap (VIP swap)
    GET|POST .../hostedservices/{service}/certificates                 List, Add Service Certificate
    GET|DELETE .../certificates/sha1-{thumbprint}                        fabric.frontend.certificates
    POST   .../hostedservices/{service}/deploymentslots/{slot}           CreateDeployment
    GET    .../deploymentslots/{slot}                                    -> DeploymentView
    GET    .../deploymentslots/{slot}?limit=N[&cursor=C]   -> DeploymentPage (N instances, 1-1000)
    DELETE .../deploymentslots/{slot}
    POST   .../deploymentslots/{slot}?comp=config|upgrade|walkupgradedomain|status
    POST   .../deploymentslots/{slot}/roleinstances/{name}?comp=reboot|reimage|rebuild
    POST   .../roleinstances/{name}/exec     run a command there (RemoteAccess)  fabric.frontend.remote
    GET    .../roleinstances/{name}/shell    a WebSocket: a shell there (RemoteAccess)
    GET    .../roleinstances/{name}/logs     its logs on a joined host  fabric.frontend.instance_logs
    *      /chaos/...                                                    fabric.frontend.chaos_routes
    GET    /events[?after=&limit=&wait=...], /events/stream              fabric.frontend.events_routes
    GET    /metrics      (Prometheus; without the token when metrics_public)   fabric.frontend.metrics_routes
    *      /cluster/tokens[/{id}], /cluster/hosts   bootstrap tokens, joined hosts   fabric.frontend.cluster_routes
    GET    /, *  /portal/...   the portal: it signs in by itself (a session header) fabric.portal

A signed-in portal page may call every route with its session in the ``X-Reddog-Session``
header instead of the token (never with a cookie: fabric.portal.sessions says why).

Bodies are JSON (see ``fabric.frontend.api``); a package or configuration travels in it base64. A long call answers 202 with ``x-ms-request-id``;
``GET .../operations/{id}`` then reads InProgress, Succeeded or Failed. A refused request
answers 4xx with ``{"Error": {"Code", "Message"}}`` and changes nothing; a bug answers 500
InternalError naming the request id its traceback is logged under; a deploy or upgrade whose
controller did not answer in time answers 504 OperationOutcomeUnknown (GET the slot to see).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec

from actors import ActorDead, ActorError, AskTimeout, Ref
from actors import Request as ActorRequest  # beside the HTTP Request of _http
from fabric import portal
from fabric.controller.messages import OperationAccepted
from fabric.frontend import (
    api,
    certificates,
    chaos_routes,
    cluster_routes,
    events_routes,
    instance_logs,
    metrics_routes,
    remote,
)
from fabric.frontend._http import (
    ClientGone,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    error_response,
)
from fabric.frontend.api import ApiError, bad_request, not_found
from fabric.frontend.auth import token_matches
from fabric.frontend.operations import OperationLog, read_operation
from fabric.frontend.services import ServiceHandlers, subscription_view
from fabric.frontend.slots import SlotHandlers
from fabric.frontend.store import HostedServiceRecord, Store, SubscriptionRecord
from fabric.settings import Settings
from roles.hosts.http import answer_lifespan, asgi_handler, serve_http, server_config, socket_url

logger = logging.getLogger("fabric.frontend.rdfe")
#: The answer type of a request to FFE.
Answer = TypeVar("Answer")

#: a request body larger than this is refused with 413; a body carrying a package may be
#: larger (package_body_bytes), its JSON commands and configurations are small
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_PACKAGE_BYTES = Settings().max_package_bytes
#: uploaded packages are streamed into this folder of the state folder, never held in memory
UPLOADS_DIR = "uploads"
#: on shutdown, how long requests in flight may take to finish before they are cut
GRACEFUL_TIMEOUT = 2.0

_MUTATING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
#: how long a refused body is read and dropped, at most, while its refusal is sent and the
#: connection closes
DISCARD_SECONDS = 10.0


class Rdfe:
    """The RDFE ASGI application.

    Args:
        ffe: the FFE actor (in this process).
        state_dir: the state folder (``rdfe.json`` holds subscriptions and hosted services).
        token: the secret every request must present.
        max_body_bytes: larger request bodies get 413.
        max_package_bytes: a larger package (deploy, upgrade) gets 413; its body may be the
            package in base64 plus ``max_body_bytes``.
        ffe_timeout: how long FFE may take to answer (it stages packages and asks controllers).
        metrics_public: ``GET /metrics`` answers without the token (for a scraper).

    Raises:
        StoreError: ``<state>/rdfe.json`` is damaged.
    """

    def __init__(
        self,
        ffe: Ref,
        state_dir: str | Path,
        token: str,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_package_bytes: int = DEFAULT_MAX_PACKAGE_BYTES,
        ffe_timeout: float = 120.0,
        metrics_public: bool = False,
    ) -> None:
        self.ffe = ffe
        self.metrics_public = metrics_public
        self.state_dir = Path(state_dir)
        self.store = Store(self.state_dir)
        self.operations = OperationLog()
        self.max_body_bytes = max_body_bytes
        self.max_package_bytes = max_package_bytes
        # base64 takes 4 bytes for 3; the configuration and the other fields come beside it.
        self.package_body_bytes = (max_package_bytes + 2) // 3 * 4 + max_body_bytes
        self.uploads = self.state_dir / UPLOADS_DIR
        self.ffe_timeout = ffe_timeout
        self._token = token
        # One change at a time: a check and the change it allows never interleave with another.
        self.lock = anyio.Lock()
        self.services = ServiceHandlers(self)
        self.slots = SlotHandlers(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] == "websocket":  # remote shells (fabric.frontend.remote)
            header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            await remote.shell(self, scope, receive, send, authorized=token_matches(self._token, header))
            return
        if scope["type"] != "http":
            return
        request_id = uuid.uuid4().hex
        request = Request(scope, receive, self.max_body_bytes)
        try:
            response = await self._answer(request, request_id)
        except ClientGone:
            return
        except ApiError as exc:
            response = error_response(exc)
        except Exception:
            logger.exception(
                "bug while handling %s %s (request id %s)", request.method, request.path, request_id
            )
            response = error_response(
                ApiError(
                    500,
                    "InternalError",
                    f"the fabric hit a bug handling this request; its log has the traceback under request id {request_id}",
                )
            )
        if 200 <= response.status < 300 and "x-ms-request-id" in response.headers:
            request_id = response.headers.pop("x-ms-request-id")
        if request.body_left_unread:
            # Answered before the body was read (401, 413, 404...): the rest of it is still on
            # the wire, so the connection must close rather than be reused for the next request.
            response.headers["connection"] = "close"
            async with anyio.create_task_group() as tg:
                # hypercorn hands the body over through a bounded queue and, once the response
                # ends, puts http.disconnect in it: full of a body nobody reads, that put (and
                # with it the close) waited until the client gave up sending (60 s for httpx).
                tg.start_soon(discard_until_disconnect, receive)
                await response.send(send, request_id)
            return
        await response.send(send, request_id)

    async def _answer(self, request: Request, request_id: str) -> Response:
        if portal.owns(request.path):  # the portal signs its users in itself (fabric.portal)
            return await portal.route(self, request)
        public = self.metrics_public and request.path == "/metrics" and request.method == "GET"
        signed_in = public or portal.session_allows(self, request)  # a portal page: its session header
        if not signed_in and not token_matches(self._token, request.headers.get("authorization")):
            # Checked before the route and before reading the body: nothing is touched.
            raise ApiError(
                401,
                "AuthenticationFailed",
                "a valid token is required: send `Authorization: Bearer <token>` with the token from the fabric's state folder",
            )
        if request.method not in _MUTATING or remote.owns(request.segments):
            # A remote session changes nothing of the fabric's and may run for minutes.
            return await self._route(request, request_id)
        try:
            async with self.lock:
                response = await self._route(request, request_id)
        except ApiError as exc:
            self._record(request, request_id, exc.status, exc.code, exc.message)
            raise
        if "x-ms-request-id" not in response.headers:
            self._record(request, request_id, response.status)
        return response

    def _record(
        self, request: Request, request_id: str, status: int, code: str = "", message: str = ""
    ) -> None:
        segments = request.segments
        sub = (
            self.store.subscription(segments[1])
            if segments[:1] == ["subscriptions"] and len(segments) > 1
            else None
        )
        if sub is not None:
            self.operations.finished(
                request_id, sub.id, http_status_code=status, error_code=code, error_message=message
            )

    # -- routing -------------------------------------------------------------------------------------

    async def _route(self, r: Request, request_id: str) -> Response:
        match r.segments:
            case ["subscriptions"]:
                self._allow(r, "GET")
                views = [subscription_view(s) for s in self.store.subscriptions]
                return Response(200, api.Subscriptions(subscriptions=views))
            case ["subscriptions", sub]:
                self._allow(r, "GET")
                return Response(200, subscription_view(self.subscription(sub)))
            case ["subscriptions", sub, "locations"]:
                self._allow(r, "GET")
                self.subscription(sub)
                return Response(200, await self.services.locations())
            case ["subscriptions", sub, "operations", rid]:
                self._allow(r, "GET")
                return Response(200, await read_operation(self, self.subscription(sub).id, rid))
            case ["subscriptions", sub, "services", "hostedservices"]:
                self._allow(r, "GET", "POST")
                s = self.subscription(sub)
                if r.method == "GET":
                    return await self.services.list_services(s, r)
                return await self.services.create_service(s, r)
            case ["subscriptions", sub, "services", "hostedservices", svc]:
                self._allow(r, "GET", "PUT", "DELETE", "POST", comps={"POST": ("swap",)})
                s = self.subscription(sub)
                if r.method == "POST":
                    return await self.slots.swap(s, svc, r)
                if r.method == "GET":
                    return await self.services.get_service(s, svc, r)
                if r.method == "PUT":
                    return await self.services.update_service(s, svc, r)
                return await self.services.delete_service(s, svc)
            case ["subscriptions", sub, "services", "hostedservices", svc, "certificates", *rest]:
                return await certificates.route(self, self.subscription(sub), svc, rest, r)
            case ["subscriptions", sub, "services", "hostedservices", svc, "deploymentslots", slot]:
                self._allow(
                    r,
                    "GET",
                    "POST",
                    "DELETE",
                    comps={"POST": ("config", "upgrade", "walkupgradedomain", "status")},
                )
                return await self.slots.slot(self.subscription(sub), svc, slot, r)
            case [
                "subscriptions",
                sub,
                "services",
                "hostedservices",
                svc,
                "deploymentslots",
                slot,
                "roleinstances",
                name,
            ]:
                self._allow(r, "POST", comps={"POST": ("reboot", "reimage", "rebuild")}, need_comp=True)
                return await self.slots.instance(self.subscription(sub), svc, slot, name, r)
            case [
                "subscriptions",
                sub,
                "services",
                "hostedservices",
                svc,
                "deploymentslots",
                slot,
                "roleinstances",
                name,
                "exec",
            ]:  # remote access (fabric.frontend.remote)
                return await remote.route(self, self.subscription(sub), svc, slot, name, r)
            case [
                "subscriptions",
                sub,
                "services",
                "hostedservices",
                svc,
                "deploymentslots",
                slot,
                "roleinstances",
                name,
                "logs",
            ]:  # the logs of an instance on a joined host (fabric.frontend.instance_logs)
                return await instance_logs.route(self, self.subscription(sub), svc, slot, name, r)
            case ["chaos", *rest]:  # fault injection (fabric.frontend.chaos_routes)
                return await chaos_routes.route(self, r, rest)
            case ["events", *rest]:  # the timeline (fabric.frontend.events_routes)
                return await events_routes.route(self, r, rest)
            case ["metrics"]:  # Prometheus (fabric.frontend.metrics_routes)
                return await metrics_routes.route(self, r)
            case ["cluster", *rest]:  # tokens and joined hosts (fabric.frontend.cluster_routes)
                return await cluster_routes.route(self, r, rest)
        raise not_found(f"no API at {r.path}; see the route list in fabric/frontend/rdfe.py")

    @staticmethod
    def _allow(
        r: Request, *methods: str, comps: dict[str, tuple[str, ...]] | None = None, need_comp: bool = False
    ) -> None:
        if r.method not in methods:
            raise ApiError(
                405,
                "UnsupportedHttpVerb",
                f"{r.path} does not take {r.method}; it takes {', '.join(methods)}",
            )
        allowed = (comps or {}).get(r.method, ())
        if r.comp is None:
            if need_comp:
                raise bad_request(
                    f"{r.method} {r.path} needs ?comp= one of: {', '.join(allowed)}",
                    "InvalidQueryParameterValue",
                )
        elif r.comp not in allowed:
            hint = f"one of: {', '.join(allowed)}" if allowed else "no comp here"
            raise bad_request(
                f"comp={r.comp!r} is not known for {r.method} {r.path}; use {hint}",
                "InvalidQueryParameterValue",
            )

    # -- FFE -----------------------------------------------------------------------------------------

    async def ask_ffe(self, message: ActorRequest[Answer], timeout: float | None = None) -> Answer:
        """Ask FFE and return its answer (within ``timeout``, by default ffe_timeout).

        Raises:
            ApiError: FFE refused, is gone (503) or did not answer in time (503).
            ActorError: a bug in FFE or a controller (RDFE answers 500 and logs it).
        """
        try:
            return await self.ffe.ask(message, timeout=timeout or self.ffe_timeout)
        except ActorError as exc:
            refusal = exc.caused_by(ApiError)
            if refusal is None:
                raise
        except ActorDead:
            raise ApiError(503, "ServiceUnavailable", "the fabric front end (FFE) is not running") from None
        except AskTimeout:
            raise ApiError(
                503, "ServiceUnavailable", "the fabric front end (FFE) did not answer in time; try again"
            ) from None
        # Raised bare, out of the handler and of this frame: held by the ActorError or by a
        # local, it would be in a cycle with its own traceback, whose frames hold the request
        # (a refused package's megabytes) until the garbage collector happens by; and its own
        # traceback reaches into FFE's frames.
        try:
            raise refusal.with_traceback(None)
        finally:
            del refusal

    def accepted(
        self, sub: SubscriptionRecord, pool: str, answer: Any, request_id: str | None = None
    ) -> Response:
        """202 with the controller's request id for an accepted long command; 200 for an answer."""
        if isinstance(answer, OperationAccepted):
            self.operations.started(answer.request_id, sub.id, pool)
            return Response(202, None, {"x-ms-request-id": answer.request_id})
        body = answer if isinstance(answer, msgspec.Struct) else None
        return Response(200, body)

    # -- lookups -------------------------------------------------------------------------------------

    def subscription(self, subscription_id: str) -> SubscriptionRecord:
        """The subscription with this id, or 404."""
        found = self.store.subscription(subscription_id)
        if found is None:
            raise not_found(f"subscription {subscription_id!r} does not exist; GET /subscriptions lists them")
        return found

    def hosted(self, sub: SubscriptionRecord, name: str) -> HostedServiceRecord:
        """The hosted service record, or 404."""
        found = sub.hosted_services.get(name.lower())
        if found is None:
            raise not_found(f"hosted service {name!r} does not exist in subscription {sub.id}")
        return found


async def discard_until_disconnect(receive: Receive) -> None:
    """Read and drop what the client still sends of a refused body until the server closes the
    connection (at most DISCARD_SECONDS)."""
    with anyio.move_on_after(DISCARD_SECONDS):
        while (await receive())["type"] != "http.disconnect":
            pass


async def serve_api(
    ffe: Ref,
    state_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_package_bytes: int = DEFAULT_MAX_PACKAGE_BYTES,
    metrics_public: bool = False,
    tls: bool = False,
    shutdown_event: anyio.Event | None = None,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API with hypercorn until cancelled (or ``shutdown_event`` is set); either way
    requests in flight get GRACEFUL_TIMEOUT seconds (``roles.hosts.http.serve_http``).

    Writes a fresh token to ``<state>/token`` (0600) before listening and the URL to
    ``<state>/api`` once listening, then reports the URL through ``task_status``; on the way
    out ``<state>/api`` is removed, so clients say no fabric is running.

    Args:
        ffe: the FFE actor.
        state_dir: the fabric's state folder (created if missing).
        host: the address to bind (loopback unless you mean to expose the fabric).
        port: the port; 0 picks a free one.
        metrics_public: serve ``GET /metrics`` without the token.
        tls: serve HTTPS with a certificate for ``host`` from the cluster CA (fabric.frontend.api_tls).
        max_body_bytes, max_package_bytes: the request body limits (see ``Rdfe``).

    Raises:
        OSError: the port cannot be bound.
        StoreError: ``<state>/rdfe.json`` is damaged.
    """
    import socket

    from fabric.frontend.auth import clear_api_url, new_token, write_api_url, write_token
    from fabric.frontend.staging import discard_all_unreferenced
    from roles.hosts.http_bounded import ConnectionGate, default_limit

    state = Path(state_dir)
    await anyio.Path(state).mkdir(parents=True, exist_ok=True)
    token = new_token()
    write_token(state, token)
    # Bodies an earlier fabric was receiving when it was killed.
    await anyio.to_thread.run_sync(shutil.rmtree, state / UPLOADS_DIR, True)
    rdfe = Rdfe(
        ffe,
        state,
        token,
        max_body_bytes=max_body_bytes,
        max_package_bytes=max_package_bytes,
        metrics_public=metrics_public,
    )
    # Packages staged for commands no controller answered, or by a fabric stopped between
    # staging and recording: no command of this fabric can read them now.
    keep = {
        h.name: list(h.packages.values())
        for s in rdfe.store.subscriptions
        for h in s.hosted_services.values()
    }
    await anyio.to_thread.run_sync(discard_all_unreferenced, state, keep)
    app = asgi_handler(rdfe)
    config = server_config(graceful_timeout=GRACEFUL_TIMEOUT)
    trigger = None if shutdown_event is None else shutdown_event.wait
    context = None
    if tls:
        from fabric.frontend.api_tls import server_context

        context = await anyio.to_thread.run_sync(server_context, state, host)
    with socket.create_server((host, port), backlog=config.backlog) as sock:
        url = socket_url(sock, "https" if tls else "http")
        serve = partial(serve_http, ssl_context=context)
        try:
            async with anyio.create_task_group() as tg:
                # any process of the machine (a limited role too) may connect: a flood is bounded
                gate = ConnectionGate(default_limit(), f"the API at {url}")
                await tg.start(partial(serve, app, sock, config, shutdown_trigger=trigger, gate=gate))
                write_api_url(state, url)
                task_status.started(url)
        finally:
            clear_api_url(state, url)
