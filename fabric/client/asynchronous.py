"""The async client of a running fabric's HTTP API (Service Management and chaos), found through
its state folder: ``<state>/api`` holds the URL, ``<state>/token`` the token.

Every call raises a ClientError subclass (fabric.client.errors) with a one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import anyio
import httpx
import msgspec

from fabric.client.errors import ClientError, NoFabricRunning, NotFound, refusal, unreachable
from fabric.client.tls import api_verify
from fabric.cluster.tokens import CreateToken, NewToken, TokenInfo
from fabric.controller.chaos.messages import FaultList, FaultRecord, Inject, TargetMap, WatchBatch, WatchStart
from fabric.controller.events import MAX_PAGE, EventPage
from fabric.controller.messages import (
    DeploymentPage,
    DeploymentView,
    HostPage,
    HostView,
    InstanceLog,
    InstanceView,
    OperationView,
    PublicEndpoint,
    Slot,
    UpgradeMode,
)
from fabric.frontend import api
from fabric.frontend.auth import read_api_url, read_token

T = TypeVar("T")

#: the Service Management API version this client speaks (informative: the API takes any)
API_VERSION = "2014-06-01"
#: instances the client asks for per page when it reads a deployment
PAGE = 500
SLOTS: tuple[Slot, ...] = ("production", "staging")


class AsyncFabricClient:
    """An async client of one running fabric; use ``async with`` (or ``aclose``).

    Args:
        state_dir: the fabric's state folder.
        timeout: seconds a single HTTP call may take.
        pool: the machine pool chaos calls go to (None: the fabric picks, by service).
        transport: how requests travel (default: straight to the URL; a chaos run against
            controller replicas follows them, fabric.chaos.following).

    Raises:
        NoFabricRunning: the state folder has no ``api`` or ``token`` file.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        timeout: float = 120.0,
        pool: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        url, token = read_api_url(self.state_dir), read_token(self.state_dir)
        if url is None or token is None:
            raise NoFabricRunning(self.state_dir)
        self.url = url
        self.pool = pool
        self._http = httpx.AsyncClient(
            base_url=url,
            verify=api_verify(self.state_dir, url),  # https: the pinned cluster CA alone
            headers={"authorization": f"Bearer {token}", "x-ms-version": API_VERSION},
            timeout=timeout,
            transport=transport,
        )
        self._subscription: str | None = None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFabricClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ------------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: msgspec.Struct | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One API call; returns the 2xx response (``timeout``: this call's, not the client's).

        Raises:
            NoFabricRunning: nothing listens at the URL in ``<state>/api``.
            ApiRefused: the API answered 4xx or 5xx (a subclass per status: errors.py).
            ClientError: the fabric timed out or broke the connection.
        """
        content = None if body is None else msgspec.json.encode(body)
        headers = {} if body is None else {"content-type": "application/json"}
        try:
            extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
            resp = await self._http.request(
                method, path, content=content, params=params, headers=headers, **extra
            )
        except httpx.HTTPError as exc:
            raise unreachable(exc, self.url, self.state_dir) from None
        if resp.status_code >= 400:
            raise refusal(resp, self.url, self.state_dir)
        return resp

    async def _call(
        self, method: str, path: str, kind: type[T], body: msgspec.Struct | None = None, **params: Any
    ) -> T:
        query = {k: str(v) for k, v in params.items() if v is not None}
        resp = await self.request(method, path, body=body, params=query or None)
        return msgspec.json.decode(resp.content, type=kind)

    async def _start(
        self, method: str, path: str, body: msgspec.Struct | None = None, comp: str | None = None
    ) -> str:
        """Start an operation; returns its request id."""
        resp = await self.request(method, path, body=body, params=None if comp is None else {"comp": comp})
        return str(resp.headers.get("x-ms-request-id", ""))

    async def subscription(self) -> str:
        """The subscription id the client works in (the fabric's first)."""
        if self._subscription is None:
            subs = (await self._call("GET", "/subscriptions", api.Subscriptions)).subscriptions
            if not subs:
                raise ClientError(f"the fabric at {self.url} has no subscription")
            self._subscription = subs[0].subscription_id
        return self._subscription

    async def _services(self) -> str:
        return f"/subscriptions/{await self.subscription()}/services/hostedservices"

    async def _slot(self, service: str, slot: Slot) -> str:
        return f"{await self._services()}/{service}/deploymentslots/{slot}"

    # -- hosted services -----------------------------------------------------------------------------

    async def hosted_services(self, *, detail: bool = True) -> list[api.HostedService]:
        """Every hosted service, with its deployments when ``detail``."""
        params = {"embed-detail": "true"} if detail else None
        resp = await self.request("GET", await self._services(), params=params)
        return msgspec.json.decode(resp.content, type=api.HostedServices).hosted_services

    async def deployments(self, *, limit: int | None = None) -> list[DeploymentView]:
        """Every deployment of every hosted service, each fetched page by page: with all its
        instances, or the first ``limit`` (see ``deployment_pages`` for the totals)."""
        return [page.deployment for page in await self.deployment_pages(limit=limit)]

    async def deployment_pages(self, *, limit: int | None = None) -> list[DeploymentPage]:
        """Every deployment (as ``paged_deployment``), by hosted service then slot."""
        out: list[DeploymentPage] = []
        for hosted in await self.hosted_services(detail=False):
            for slot in SLOTS:
                try:
                    out.append(await self.paged_deployment(hosted.service_name, slot, limit=limit))
                except NotFound:
                    continue
        return out

    async def deployment_page(
        self, service: str, slot: Slot, *, limit: int = PAGE, cursor: str = ""
    ) -> DeploymentPage:
        """One page of a deployment: at most ``limit`` instances (1..1000) after ``cursor`` (a
        previous page's ``next_cursor``; "": from the first)."""
        path = await self._slot(service, slot)
        return await self._call("GET", path, DeploymentPage, limit=limit, cursor=cursor or None)

    async def paged_deployment(self, service: str, slot: Slot, *, limit: int | None = None) -> DeploymentPage:
        """A deployment read page by page: every instance (``limit`` None), or the first
        ``limit``; ``next_cursor`` is "" when it holds them all."""
        instances: list[InstanceView] = []
        endpoints: dict[tuple[str, str], PublicEndpoint] = {}
        cursor = ""
        while True:
            want = PAGE if limit is None else min(PAGE, limit - len(instances))
            page = await self.deployment_page(service, slot, limit=want, cursor=cursor)
            instances += page.deployment.instances
            endpoints.update({(e.role, e.name): e for e in page.deployment.endpoints})
            cursor = page.next_cursor
            if not cursor or (limit is not None and len(instances) >= limit):
                view = msgspec.structs.replace(
                    page.deployment,
                    instances=instances,
                    endpoints=sorted(endpoints.values(), key=_endpoint_order),
                )
                return DeploymentPage(deployment=view, total=page.total, next_cursor=cursor)

    async def hosted_service(self, service: str) -> api.HostedService | None:
        """A hosted service, or None when it does not exist."""
        try:
            return await self._call("GET", f"{await self._services()}/{service}", api.HostedService)
        except NotFound:
            return None

    async def create_hosted_service(
        self, service: str, *, label: str = "", location: str | None = None, affinity_group: str | None = None
    ) -> None:
        """Create a hosted service."""
        body = api.CreateHostedService(
            service_name=service, label=label, location=location, affinity_group=affinity_group
        )
        await self.request("POST", await self._services(), body=body)

    async def delete_hosted_service(self, service: str) -> None:
        """Delete a hosted service that has no deployments."""
        await self.request("DELETE", f"{await self._services()}/{service}")

    # -- service certificates ------------------------------------------------------------------------

    async def add_certificate(
        self,
        service: str,
        data: bytes,
        *,
        certificate_format: Literal["pfx", "pem"] = "pfx",
        password: str = "",
    ) -> api.Certificate:
        """Add Service Certificate: a PFX, or a PEM certificate with its key."""
        # The upload's body sits beside its handler, which loads the certificate store
        # (cryptography): only `fabric cert add` pays for it, which parses the upload with it anyway.
        from fabric.frontend import certificates as cert_api

        body = cert_api.CertificateFile(data=data, certificate_format=certificate_format, password=password)
        path = f"{await self._services()}/{service}/certificates"
        return await self._call("POST", path, api.Certificate, body)

    async def certificates(self, service: str) -> list[api.Certificate]:
        """List Service Certificates."""
        path = f"{await self._services()}/{service}/certificates"
        return (await self._call("GET", path, api.Certificates)).certificates

    async def certificate(self, service: str, thumbprint: str) -> api.Certificate:
        """Get Service Certificate (``thumbprint``: hex, or sha1-<hex>)."""
        path = f"{await self._services()}/{service}/certificates/{_thumbprint_path(thumbprint)}"
        return await self._call("GET", path, api.Certificate)

    async def delete_certificate(self, service: str, thumbprint: str) -> None:
        """Delete Service Certificate."""
        path = f"{await self._services()}/{service}/certificates/{_thumbprint_path(thumbprint)}"
        await self.request("DELETE", path)

    # -- the cluster: bootstrap tokens and joined hosts (fabric.frontend.cluster_routes) ------------

    async def create_token(self, ttl: float, description: str = "") -> NewToken:
        """A bootstrap token valid ``ttl`` seconds, with the join command's other parts."""
        body = CreateToken(ttl=ttl, description=description)
        return await self._call("POST", "/cluster/tokens", NewToken, body)

    async def tokens(self) -> list[TokenInfo]:
        """The bootstrap tokens not expired yet (never their secrets)."""
        return await self._call("GET", "/cluster/tokens", list[TokenInfo])

    async def delete_token(self, token_id: str) -> None:
        """Revoke a bootstrap token (by its id)."""
        await self.request("DELETE", f"/cluster/tokens/{token_id}")

    async def hosts(self, offset: int = 0, limit: int = 100, pool: str | None = None) -> HostPage:
        """A page of every host, local and joined (``limit`` up to 500)."""
        return await self._call("GET", "/cluster/hosts", HostPage, offset=offset, limit=limit, pool=pool)

    async def all_hosts(self, pool: str | None = None) -> list[HostView]:
        """Every host, page by page."""
        found: list[HostView] = []
        offset: int | None = 0
        while offset is not None:
            page = await self.hosts(offset, 500, pool)
            found += page.hosts
            offset = page.next_offset
        return found

    async def cordon(self, name: str) -> HostView:
        """Place no new instance on host ``name`` (kept over restarts)."""
        return await self._call("POST", f"/cluster/hosts/{_segment(name)}/cordon", HostView)

    async def uncordon(self, name: str) -> HostView:
        """Let placement use host ``name`` again."""
        return await self._call("POST", f"/cluster/hosts/{_segment(name)}/uncordon", HostView)

    async def drain(self, name: str) -> str:
        """Cordon host ``name`` and move its instances away; returns the request id."""
        return await self._start("POST", f"/cluster/hosts/{_segment(name)}/drain")

    async def remove_host(self, name: str) -> None:
        """Forget joined host ``name`` (it runs no instance: drain it first) and revoke its
        certificate: its link is refused from now on; it may join again with a token."""
        await self.request("DELETE", f"/cluster/hosts/{_segment(name)}")

    async def host_operation(self, request_id: str) -> OperationView:
        """A host operation's state, its progress in ``description``."""
        return await self._call("GET", f"/cluster/operations/{_segment(request_id)}", OperationView)

    # -- remote access -------------------------------------------------------------------------------

    async def exec(
        self, service: str, slot: Slot, instance: str, command: list[str], *, timeout: float = 60.0
    ) -> api.ExecResult:
        """Run ``command`` in ``instance`` as its role's account (RemoteAccess must be enabled)."""
        body = api.ExecRequest(command=command, timeout_seconds=timeout)
        path = f"{await self._slot(service, slot)}/roleinstances/{instance}/exec"
        resp = await self.request("POST", path, body=body, timeout=timeout + 30)
        return msgspec.json.decode(resp.content, type=api.ExecResult)

    async def instance_log(
        self,
        service: str,
        slot: Slot,
        instance: str,
        which: str = "",
        offset: int = 0,
        limit: int = 256 * 1024,
    ) -> InstanceLog:
        """The logs of an instance on a joined host (read there); with ``which``, ``limit`` bytes
        of that log from ``offset``."""
        path = f"{await self._slot(service, slot)}/roleinstances/{instance}/logs"
        return await self._call("GET", path, InstanceLog, file=which or None, offset=offset, limit=limit)

    # -- deployments ---------------------------------------------------------------------------------

    async def deployment(self, service: str, slot: Slot) -> DeploymentView:
        """The deployment in a slot."""
        return await self._call("GET", await self._slot(service, slot), DeploymentView)

    async def create_deployment(
        self,
        service: str,
        slot: Slot,
        *,
        name: str,
        package: bytes,
        configuration: bytes | None = None,
        configuration_name: str = "ServiceConfiguration.cscfg",
        label: str = "",
        start: bool = True,
    ) -> str:
        """Upload a package and create a deployment; returns the request id."""
        body = api.CreateDeployment(
            name=name, label=label, package=package, configuration=configuration,
            configuration_name=configuration_name, start_deployment=start,
        )  # fmt: skip
        return await self._start("POST", await self._slot(service, slot), body)

    async def change_configuration(
        self,
        service: str,
        slot: Slot,
        configuration: bytes,
        configuration_name: str,
        mode: UpgradeMode = "Auto",
    ) -> str:
        """Apply a new configuration; returns the request id."""
        body = api.ChangeConfiguration(
            configuration=configuration, configuration_name=configuration_name, mode=mode
        )
        return await self._start("POST", await self._slot(service, slot), body, "config")

    async def upgrade(
        self,
        service: str,
        slot: Slot,
        package: bytes,
        *,
        mode: UpgradeMode = "Auto",
        configuration: bytes | None = None,
        configuration_name: str = "ServiceConfiguration.cscfg",
        label: str = "",
    ) -> str:
        """Upgrade to a new package; returns the request id."""
        body = api.UpgradeDeployment(
            mode=mode, package=package, configuration=configuration,
            configuration_name=configuration_name, label=label,
        )  # fmt: skip
        return await self._start("POST", await self._slot(service, slot), body, "upgrade")

    async def walk(self, service: str, slot: Slot, domain: int) -> str:
        """Upgrade the next update domain of a Manual upgrade; returns the request id."""
        body = api.WalkUpgradeDomain(upgrade_domain=domain)
        return await self._start("POST", await self._slot(service, slot), body, "walkupgradedomain")

    async def set_status(self, service: str, slot: Slot, status: Literal["Running", "Suspended"]) -> str:
        """Suspend ("Suspended") or run ("Running") a deployment; returns the request id."""
        body = api.UpdateDeploymentStatus(status=status)
        return await self._start("POST", await self._slot(service, slot), body, "status")

    async def instance_action(self, service: str, slot: Slot, instance: str, action: str) -> str:
        """Reboot, reimage or rebuild one instance; returns the request id."""
        path = f"{await self._slot(service, slot)}/roleinstances/{instance}"
        return await self._start("POST", path, comp=action)

    async def delete_deployment(self, service: str, slot: Slot) -> str:
        """Delete a deployment; returns the request id."""
        return await self._start("DELETE", await self._slot(service, slot))

    async def swap(self, service: str) -> str:
        """VIP swap of production and staging; returns the request id."""
        return await self._start("POST", f"{await self._services()}/{service}", api.Swap())

    # -- operations ----------------------------------------------------------------------------------

    async def operation(self, request_id: str) -> api.Operation:
        """The state of an operation."""
        path = f"/subscriptions/{await self.subscription()}/operations/{request_id}"
        return await self._call("GET", path, api.Operation)

    async def wait(
        self,
        request_id: str,
        *,
        on_poll: Callable[[api.Operation], Awaitable[None]] | None = None,
        interval: float = 0.2,
    ) -> api.Operation:
        """Poll an operation until it is no longer InProgress; returns its final state."""
        while True:
            op = await self.operation(request_id)
            if on_poll is not None:
                await on_poll(op)
            if op.status != "InProgress":
                return op
            await anyio.sleep(interval)

    # -- events --------------------------------------------------------------------------------------

    async def events(
        self,
        filters: Mapping[str, str] | None = None,
        *,
        after: int = 0,
        limit: int = MAX_PAGE,
        wait: float | None = None,
    ) -> EventPage:
        """A page of the fabric's timeline after ``after`` matching ``filters`` (service, role,
        instance, kind); with ``wait``, a long poll: up to that many seconds for a first event."""
        query = {**(filters or {}), "after": str(after), "limit": str(limit)}
        if wait is not None:
            query["wait"] = f"{wait:g}"
        resp = await self.request("GET", "/events", params=query)
        return msgspec.json.decode(resp.content, type=EventPage)

    # -- chaos ---------------------------------------------------------------------------------------

    async def _chaos(
        self, method: str, path: str, kind: type[T], body: msgspec.Struct | None = None, **params: Any
    ) -> T:
        return await self._call(method, f"/chaos/{path}", kind, body, pool=self.pool, **params)

    async def inject(self, inject: Inject) -> FaultRecord:
        """Apply a fault now."""
        return await self._chaos("POST", "faults", FaultRecord, inject)

    async def faults(self) -> list[FaultRecord]:
        """Every fault record, active first."""
        return (await self._chaos("GET", "faults", FaultList)).faults

    async def undo(self, fault_id: str | None = None) -> list[FaultRecord]:
        """Undo one lasting fault, or every one in force."""
        if fault_id is None:
            return (await self._chaos("DELETE", "faults", FaultList)).faults
        return [await self._chaos("DELETE", f"faults/{fault_id}", FaultRecord)]

    async def targets(self, service: str | None = None, slot: str = "production") -> TargetMap:
        """What faults can hit in a deployment now."""
        return await self._chaos("GET", "targets", TargetMap, service=service, slot=slot)

    async def watch(
        self, service: str | None = None, slot: Slot = "production", lease: float = 30.0
    ) -> WatchBatch:
        """Start watching a deployment's instances."""
        body = WatchStart(service=service, slot=slot, lease=lease)
        return await self._chaos("POST", "watches", WatchBatch, body, service=service)

    async def poll(self, watch_id: str, since: int) -> WatchBatch:
        """A watch's events from ``since`` on."""
        return await self._chaos("GET", f"watches/{watch_id}", WatchBatch, since=since)

    async def stop_watch(self, watch_id: str, since: int) -> WatchBatch:
        """End a watch; its last events."""
        return await self._chaos("DELETE", f"watches/{watch_id}", WatchBatch, since=since)


def _segment(text: str) -> str:
    """``text`` as one URL path segment."""
    return quote(text, safe="")


def _endpoint_order(e: PublicEndpoint) -> tuple[str, str, str]:
    """The order the API lists endpoints in: by role, endpoint, then instance ("" first: the
    load-balanced one; ``Endpoint.Role_IN_n``: an instance's forwarded port)."""
    endpoint, _, instance = e.name.partition(".")
    return (e.role, endpoint, instance)


def _thumbprint_path(thumbprint: str) -> str:
    """``sha1-<THUMBPRINT>`` for a bare thumbprint; as given when it names its algorithm."""
    return thumbprint if "-" in thumbprint else f"sha1-{thumbprint}"
