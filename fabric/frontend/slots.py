"""The deployment half of RDFE: deployment slots, role instances and the VIP swap."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio

from actors import ActorError
from fabric.controller.messages import (
    DeleteDeployment,
    DeploymentView,
    GetDeployment,
    GetDeploymentPage,
    InstanceAction,
    SetDeploymentStatus,
    Slot,
    SwapDeployments,
    WalkUpgradeDomain,
)
from fabric.controller.status_page import MAX_PAGE
from fabric.frontend import api
from fabric.frontend._http import Request, Response
from fabric.frontend.api import ApiError, bad_request, conflict, not_found
from fabric.frontend.ffe import ChangeConfig, Deploy, DiscardUnreferenced, Forward, Submitted, Upgrade
from fabric.frontend.paging import cursor_of, limit_of
from fabric.frontend.staging import discard_package
from fabric.frontend.store import HostedServiceRecord, SubscriptionRecord

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe

logger = logging.getLogger("fabric.frontend.rdfe")

SLOTS: tuple[Slot, ...] = ("production", "staging")
#: a request that carries a package
Packaged = TypeVar("Packaged", api.CreateDeployment, api.UpgradeDeployment)


def parse_slot(text: str) -> Slot:
    """The slot named in a path (case-insensitive), or 400."""
    for slot in SLOTS:
        if slot == text.lower():
            return slot
    raise bad_request(f"slot {text!r} is not production or staging")


class SlotHandlers:
    """Handlers for ``.../deploymentslots/{slot}`` and below, and for the swap."""

    def __init__(self, rdfe: Rdfe) -> None:
        self.rdfe = rdfe

    # -- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _pool(hosted: HostedServiceRecord, slot: str) -> str:
        if hosted.pool is None:
            raise not_found(f"hosted service {hosted.name!r} has no deployment in the {slot} slot")
        return hosted.pool

    async def _get(self, hosted: HostedServiceRecord, slot: Slot) -> DeploymentView:
        pool = self._pool(hosted, slot)
        view: DeploymentView = await self.rdfe.ask_ffe(
            Forward(pool=pool, command=GetDeployment(service=hosted.name, slot=slot))
        )
        return view

    async def _current(self, hosted: HostedServiceRecord) -> dict[Slot, DeploymentView]:
        """The deployments a hosted service has now, by slot."""
        found: dict[Slot, DeploymentView] = {}
        if hosted.pool is None:
            return found
        for slot in SLOTS:
            try:
                found[slot] = await self._get(hosted, slot)
            except ApiError as exc:
                if exc.status != 404:
                    raise
        return found

    async def _save(self, hosted: HostedServiceRecord, name: str, package: str | None) -> None:
        """Record the package deployment ``name`` runs now (None: it is gone); drop the old one."""
        old = hosted.packages.pop(name, None)
        if package is not None:
            hosted.packages[name] = package
        await self._save_records()
        if old is not None and old != package:
            await anyio.to_thread.run_sync(discard_package, old)
        # The pool answered, so it is done with every package staged before: those no record
        # names (kept when a controller did not answer) go. Through FFE, which stages in order.
        # Best effort: the change is made, and a package left now goes at the next sweep.
        keep = list(hosted.packages.values())
        try:
            await self.rdfe.ask_ffe(DiscardUnreferenced(service=hosted.name, keep=keep))
        except (ApiError, ActorError) as exc:
            logger.warning("staged packages of %s not swept: %s", hosted.name, exc)

    async def _save_records(self) -> None:
        # The fabric command was sent: the records follow it even if the disk fails now.
        try:
            await anyio.to_thread.run_sync(self.rdfe.store.save)
        except OSError:
            logger.exception("could not save %s", self.rdfe.store.path)

    # -- deployment slots -------------------------------------------------------------------------

    async def slot(self, sub: SubscriptionRecord, service: str, slot_text: str, r: Request) -> Response:
        """GET, DELETE, POST (create) and POST ?comp=... on a deployment slot."""
        hosted = self.rdfe.hosted(sub, service)
        slot = parse_slot(slot_text)
        if r.method == "GET":
            limit, cursor = limit_of(r, MAX_PAGE), cursor_of(r)
            if limit is None:
                if cursor:
                    raise bad_request("cursor goes with limit (a page of instances)")
                return Response(200, await self._get(hosted, slot))
            pool = self._pool(hosted, slot)
            page = GetDeploymentPage(service=hosted.name, slot=slot, limit=limit, after=cursor)
            return Response(200, await self.rdfe.ask_ffe(Forward(pool=pool, command=page)))
        if r.method == "DELETE":
            return await self._delete(sub, hosted, slot)
        match r.comp:
            case None:
                return await self._create(sub, hosted, slot, r)
            case "config":
                return await self._configure(sub, hosted, slot, r)
            case "upgrade":
                return await self._upgrade(sub, hosted, slot, r)
            case "walkupgradedomain":
                walk = await r.json(api.WalkUpgradeDomain)
                command: Any = WalkUpgradeDomain(
                    service=hosted.name, slot=slot, upgrade_domain=walk.upgrade_domain
                )
            case _:  # "status": the router lets no other comp through
                status = await r.json(api.UpdateDeploymentStatus)
                command = SetDeploymentStatus(service=hosted.name, slot=slot, status=status.status)
        return await self._forward(sub, hosted, slot, command)

    async def instance(
        self, sub: SubscriptionRecord, service: str, slot_text: str, name: str, r: Request
    ) -> Response:
        """POST .../roleinstances/{name}?comp=reboot|reimage|rebuild."""
        hosted = self.rdfe.hosted(sub, service)
        slot = parse_slot(slot_text)
        action = cast(Any, r.comp)
        command = InstanceAction(service=hosted.name, slot=slot, instance_id=name, action=action)
        return await self._forward(sub, hosted, slot, command)

    async def _forward(
        self, sub: SubscriptionRecord, hosted: HostedServiceRecord, slot: Slot, command: Any
    ) -> Response:
        pool = self._pool(hosted, slot)
        answer = await self.rdfe.ask_ffe(Forward(pool=pool, command=command))
        return self.rdfe.accepted(sub, pool, answer)

    async def _create(
        self, sub: SubscriptionRecord, hosted: HostedServiceRecord, slot: Slot, r: Request
    ) -> Response:
        body = await self._with_package(r, api.CreateDeployment)
        current = await self._current(hosted)
        if slot in current:
            raise conflict(
                f"the {slot} slot of {hosted.name!r} already holds deployment {current[slot].name!r}; "
                "upgrade it, or delete it first"
            )
        if any(view.name == body.name for view in current.values()):
            raise conflict(
                f"deployment name {body.name!r} is taken in {hosted.name!r}; choose another --name"
            )
        affinity_pool = None
        if hosted.pool is None and hosted.affinity_group is not None:
            affinity_pool = self.rdfe.store.affinity_pool(hosted.affinity_group)
        submitted: Submitted = await self.rdfe.ask_ffe(
            Deploy(
                pool=hosted.pool,
                location=hosted.location,
                affinity_pool=affinity_pool,
                service=hosted.name,
                slot=slot,
                name=body.name,
                label=body.label or body.name,
                package=body.package,
                configuration=body.configuration,
                configuration_name=body.configuration_name,
                start=body.start_deployment,
            )
        )
        hosted.pool = submitted.pool  # so that GET on the slot finds it, if it was created
        if submitted.answer is None:
            await self._save_records()
            raise _unknown(submitted, f"deployment {body.name!r} may still be created", r.path)
        await self._save(hosted, body.name, submitted.package_path)
        return self.rdfe.accepted(sub, submitted.pool, submitted.answer)

    async def _with_package(self, r: Request, kind: type[Packaged]) -> Packaged:
        """A body carrying a package: allowed up to the package limit, streamed to a file."""
        rdfe = self.rdfe
        r.allow_body(rdfe.package_body_bytes)
        body = await r.json_spooled(kind, rdfe.uploads)
        size = len(body.package)
        if size > rdfe.max_package_bytes:
            del body  # not kept alive by the error's traceback
            raise ApiError(
                413,
                "RequestBodyTooLarge",
                f"the package is {size} bytes, over the limit of {rdfe.max_package_bytes}",
            )
        return body

    async def _delete(self, sub: SubscriptionRecord, hosted: HostedServiceRecord, slot: Slot) -> Response:
        current = await self._get(hosted, slot)
        response = await self._forward(sub, hosted, slot, DeleteDeployment(service=hosted.name, slot=slot))
        # The controller keeps its own copy until the instances are gone; ours is no longer needed.
        await self._save(hosted, current.name, None)
        return response

    async def _configure(
        self, sub: SubscriptionRecord, hosted: HostedServiceRecord, slot: Slot, r: Request
    ) -> Response:
        body = await r.json(api.ChangeConfiguration)
        current = await self._get(hosted, slot)
        pool = self._pool(hosted, slot)
        answer = await self.rdfe.ask_ffe(
            ChangeConfig(
                pool=pool,
                service=hosted.name,
                slot=slot,
                configuration=body.configuration,
                configuration_name=body.configuration_name,
                mode=body.mode,
                package_path=hosted.packages.get(current.name),
            )
        )
        return self.rdfe.accepted(sub, pool, answer)

    async def _upgrade(
        self, sub: SubscriptionRecord, hosted: HostedServiceRecord, slot: Slot, r: Request
    ) -> Response:
        body = await self._with_package(r, api.UpgradeDeployment)
        current = await self._get(hosted, slot)
        pool = self._pool(hosted, slot)
        submitted: Submitted = await self.rdfe.ask_ffe(
            Upgrade(
                pool=pool,
                service=hosted.name,
                slot=slot,
                package=body.package,
                configuration=body.configuration,
                configuration_name=body.configuration_name,
                mode=body.mode,
                role=body.role_to_upgrade,
                label=body.label,
            )
        )
        if submitted.answer is None:
            # Which package it runs is unknown now: a configuration is checked without one (the
            # controller checks it whole) rather than against a definition it may not run.
            hosted.packages.pop(current.name, None)
            await self._save_records()
            raise _unknown(submitted, f"deployment {current.name!r} may still be upgraded", r.path)
        await self._save(hosted, current.name, submitted.package_path)
        return self.rdfe.accepted(sub, pool, submitted.answer)

    # -- swap ----------------------------------------------------------------------------------------

    async def swap(self, sub: SubscriptionRecord, service: str, r: Request) -> Response:
        """POST .../hostedservices/{service} with a Swap body (or ?comp=swap): VIP swap."""
        hosted = self.rdfe.hosted(sub, service)
        body = await r.json(api.Swap, default=api.Swap())
        current = await self._current(hosted)
        if not current:
            raise not_found(f"hosted service {hosted.name!r} has no deployments to swap")
        checks: list[tuple[str | None, Slot, str]] = [
            (body.production, "production", "Production"),
            (body.source_deployment, "staging", "SourceDeployment"),
        ]
        for given, slot, field in checks:
            if given is None:
                continue
            actual = current.get(slot)
            if actual is None or actual.name != given:
                now = repr(actual.name) if actual else "nothing"
                raise bad_request(f"{field} {given!r} does not match the {slot} slot, which holds {now}")
        return await self._forward(sub, hosted, "production", SwapDeployments(service=hosted.name))


def _unknown(submitted: Submitted, what: str, slot_path: str) -> ApiError:
    """504: the controller did not answer a deploy or upgrade; it may still carry it out."""
    return ApiError(
        504,
        "OperationOutcomeUnknown",
        f"{submitted.unknown}: the outcome is unknown, {what}; GET {slot_path} "
        "(`fabric status`) shows the deployment as it is before you try again",
    )
