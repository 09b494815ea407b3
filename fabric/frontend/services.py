"""The subscription half of RDFE: subscriptions, locations and hosted services."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import msgspec

from fabric.controller.messages import DeploymentSummary, DeploymentView
from fabric.frontend import api
from fabric.frontend._http import Request, Response
from fabric.frontend.api import bad_request, conflict
from fabric.frontend.ffe import ForgetService, ListAll, ListPools, PoolInfo, SummarizeAll
from fabric.frontend.store import HostedServiceRecord, SubscriptionRecord, now_text

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe


def embed_detail(r: Request) -> bool:
    """Whether the request asked for deployments too (``?embed-detail=true``)."""
    return r.query.get("embed-detail", "").lower() == "true"


def subscription_view(s: SubscriptionRecord) -> api.Subscription:
    """The response body for a subscription."""
    return api.Subscription(
        subscription_id=s.id, subscription_name=s.name, current_hosted_services=len(s.hosted_services)
    )


def hosted_view(record: HostedServiceRecord, deployments: list[DeploymentView] | None) -> api.HostedService:
    """The response body for a hosted service (with its deployments when given)."""
    props = api.HostedServiceProperties(
        label=record.label,
        description=record.description,
        location=record.location,
        affinity_group=record.affinity_group,
        date_created=record.created,
        pool=record.pool,
    )
    return api.HostedService(
        service_name=record.name,
        url=f"/services/hostedservices/{record.name}",
        hosted_service_properties=props,
        deployments=msgspec.UNSET if deployments is None else sorted(deployments, key=lambda d: d.slot),
    )


class ServiceHandlers:
    """Handlers for locations and ``.../services/hostedservices[/{service}]``."""

    def __init__(self, rdfe: Rdfe) -> None:
        self.rdfe = rdfe

    async def _pools(self) -> list[PoolInfo]:
        pools: list[PoolInfo] = await self.rdfe.ask_ffe(ListPools())
        return pools

    async def locations(self) -> api.Locations:
        """GET .../locations: the regions the pools serve."""
        by_location: dict[str, list[str]] = {}
        for p in await self._pools():
            by_location.setdefault(p.location, []).append(p.name)
        return api.Locations(
            locations=[
                api.Location(name=loc, display_name=loc, pools=names) for loc, names in by_location.items()
            ]
        )

    async def deployments(self, service: str | None = None) -> dict[str, list[DeploymentView]]:
        """Every deployment of every pool (of ``service`` only, when given), by hosted service name."""
        by_service: dict[str, list[DeploymentView]] = {}
        pools: dict[str, list[DeploymentView]] = await self.rdfe.ask_ffe(ListAll(service=service))
        for views in pools.values():
            for view in views:
                by_service.setdefault(view.service.lower(), []).append(view)
        return by_service

    async def _summaries(self, service: str) -> list[DeploymentSummary]:
        """A hosted service's deployments in every pool, without their instances."""
        pools: dict[str, list[DeploymentSummary]] = await self.rdfe.ask_ffe(SummarizeAll(service=service))
        return [s for found in pools.values() for s in found]

    async def list_services(self, sub: SubscriptionRecord, r: Request) -> Response:
        """GET .../hostedservices[?embed-detail=true]."""
        deployments = await self.deployments() if embed_detail(r) else None
        services = [
            hosted_view(h, None if deployments is None else deployments.get(h.name, []))
            for h in sub.hosted_services.values()
        ]
        return Response(200, api.HostedServices(hosted_services=services))

    async def get_service(self, sub: SubscriptionRecord, name: str, r: Request) -> Response:
        """GET .../hostedservices/{service}[?embed-detail=true]."""
        record = self.rdfe.hosted(sub, name)
        deployments = (await self.deployments(record.name)).get(record.name, []) if embed_detail(r) else None
        return Response(200, hosted_view(record, deployments))

    async def create_service(self, sub: SubscriptionRecord, r: Request) -> Response:
        """POST .../hostedservices: 201 with the new hosted service."""
        body = await r.json(api.CreateHostedService)
        name = body.service_name.lower()
        if body.location is not None and body.affinity_group is not None:
            raise bad_request("give Location or AffinityGroup, not both")
        if body.location is not None:
            served = {p.location.casefold(): p.location for p in await self._pools()}
            if body.location.casefold() not in served:
                known = ", ".join(sorted(served.values()))
                raise bad_request(f"location {body.location!r} is not served here; use one of: {known}")
        if any(name in s.hosted_services for s in self.rdfe.store.subscriptions):
            raise conflict(f"hosted service {name!r} already exists; choose another name")
        record = HostedServiceRecord(
            name=name,
            label=body.label or name,
            description=body.description,
            location=body.location,
            affinity_group=body.affinity_group,
            created=now_text(),
        )
        sub.hosted_services[name] = record
        try:
            await anyio.to_thread.run_sync(self.rdfe.store.save)
        except BaseException:
            del sub.hosted_services[name]  # not saved: not created
            raise
        where = f"/subscriptions/{sub.id}/services/hostedservices/{name}"
        return Response(201, hosted_view(record, None), {"location": where})

    async def update_service(self, sub: SubscriptionRecord, name: str, r: Request) -> Response:
        """PUT .../hostedservices/{service}: a new label or description."""
        record = self.rdfe.hosted(sub, name)
        body = await r.json(api.UpdateHostedService)
        before = (record.label, record.description)
        if body.label is not None:
            record.label = body.label
        if body.description is not None:
            record.description = body.description
        try:
            await anyio.to_thread.run_sync(self.rdfe.store.save)
        except BaseException:
            record.label, record.description = before
            raise
        return Response(200, hosted_view(record, None))

    async def delete_service(self, sub: SubscriptionRecord, name: str) -> Response:
        """DELETE .../hostedservices/{service}: only once it has no deployments (409 otherwise)."""
        record = self.rdfe.hosted(sub, name)
        remaining = await self._summaries(record.name)
        if remaining:
            slots = ", ".join(d.slot for d in remaining)
            raise conflict(
                f"hosted service {record.name!r} still has deployments ({slots}); delete them first"
            )
        del sub.hosted_services[record.name]
        try:
            await anyio.to_thread.run_sync(self.rdfe.store.save)
        except BaseException:
            sub.hosted_services[record.name] = record
            raise
        await self.rdfe.ask_ffe(ForgetService(service=record.name))
        return Response(200)
