"""A follower's answers to the read API from the database (fabric.replica.views), for when no
leader answers: subscriptions, locations, hosted services (with their deployments) and a
deployment slot (whole, or a page of its instances), as the leader last wrote them.

Each answer carries ``x-fabric-answered-by`` (this replica) and ``x-fabric-written-at`` (when
the leader last changed a row it is made of, ISO 8601): instance states are the leader's last
known ones, not a live look (a leader that died took its local hosts' instances with it).
"""

from __future__ import annotations

import bisect
import uuid
from typing import Any

import msgspec

from fabric.controller.messages import ControllerError, DeploymentPage, DeploymentView
from fabric.controller.pg_store import Database, StoreUnavailable
from fabric.controller.status_page import MAX_PAGE, cursor_key
from fabric.frontend import api
from fabric.frontend._http import Request, Response, error_response
from fabric.frontend.api import ApiError, bad_request, not_found
from fabric.frontend.auth import token_matches
from fabric.frontend.paging import cursor_of, limit_of
from fabric.frontend.services import embed_detail, hosted_view, subscription_view
from fabric.frontend.slots import parse_slot
from fabric.frontend.store import SubscriptionRecord
from fabric.replica.views import (
    DEPLOYMENT,
    POOLS,
    SUBSCRIPTIONS,
    Stored,
    deployment_key,
    pools_of,
    subscriptions_of,
    view_of,
)

Send = Any


def serves(method: str, path: str) -> bool:
    """Whether a request is one of the reads answered from the database."""
    if method != "GET":
        return False
    segments = [s for s in path.split("/") if s]
    match segments:
        case ["subscriptions"] | ["subscriptions", _] | ["subscriptions", _, "locations"]:
            return True
        case ["subscriptions", _, "services", "hostedservices", *rest]:
            return len(rest) <= 1 or (len(rest) == 3 and rest[1] == "deploymentslots")
    return False


async def answer(db: Database, token: str, name: str, scope: dict[str, Any], send: Send) -> None:
    """Answer a read (``serves`` said yes) from the database."""
    r = Request(scope, _no_body, 0)
    headers = {"x-fabric-answered-by": name}
    try:
        if not token_matches(token, r.headers.get("authorization")):
            raise ApiError(401, "AuthenticationFailed", "a valid token is required (Authorization: Bearer)")
        body, written = await _route(db, r)
        headers["x-fabric-written-at"] = written
        response = Response(200, body, headers)
    except ApiError as exc:
        response = error_response(exc)
        response.headers.update(headers)
    await response.send(send, uuid.uuid4().hex)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _route(db: Database, r: Request) -> tuple[msgspec.Struct, str]:
    rows = _Rows(db)
    match r.segments:
        case ["subscriptions"]:
            subs = await rows.subscriptions()
            return api.Subscriptions(subscriptions=[subscription_view(s) for s in subs]), rows.written
        case ["subscriptions", sub]:
            return subscription_view(await rows.subscription(sub)), rows.written
        case ["subscriptions", sub, "locations"]:
            await rows.subscription(sub)
            return _locations(pools_of(await rows.one(POOLS))), rows.written
        case ["subscriptions", sub, "services", "hostedservices"]:
            s = await rows.subscription(sub)
            detail = await rows.by_service() if embed_detail(r) else None
            services = [
                hosted_view(h, None if detail is None else detail.get(h.name, []))
                for h in s.hosted_services.values()
            ]
            return api.HostedServices(hosted_services=services), rows.written
        case ["subscriptions", sub, "services", "hostedservices", svc]:
            hosted = _hosted(await rows.subscription(sub), svc)
            views = (await rows.by_service()).get(hosted.name, []) if embed_detail(r) else None
            return hosted_view(hosted, views), rows.written
        case ["subscriptions", sub, "services", "hostedservices", svc, "deploymentslots", slot_text]:
            hosted = _hosted(await rows.subscription(sub), svc)
            slot = parse_slot(slot_text)
            limit, cursor = limit_of(r, MAX_PAGE), cursor_of(r)
            if limit is None and cursor:
                raise bad_request("cursor goes with limit (a page of instances)")
            missing = not_found(f"hosted service {hosted.name} has no deployment in the {slot} slot")
            # the row alone says whether it exists: RDFE records the pool only after the
            # controller accepted the deployment, and the leader's views may hold both by then
            found = (await rows.read([deployment_key(hosted.name, slot)])).get(
                deployment_key(hosted.name, slot)
            )
            if found is None:
                raise missing
            view = view_of(found)
            return (view if limit is None else page(view, limit, cursor)), rows.written
    raise not_found(f"no API at {r.path}")


def _hosted(sub: SubscriptionRecord, name: str) -> Any:
    found = sub.hosted_services.get(name.lower())
    if found is None:
        raise not_found(f"hosted service {name!r} does not exist in subscription {sub.id}")
    return found


def _locations(pools: list[Any]) -> api.Locations:
    by_location: dict[str, list[str]] = {}
    for p in pools:
        by_location.setdefault(p.location, []).append(p.name)
    return api.Locations(
        locations=[
            api.Location(name=loc, display_name=loc, pools=names) for loc, names in by_location.items()
        ]
    )


def page(view: DeploymentView, limit: int, after: str = "") -> DeploymentPage:
    """A page of a stored view's instances, as the leader pages them (role, then index)."""
    try:
        ordered = sorted(view.instances, key=lambda i: cursor_key(i.id))
        start = (
            bisect.bisect_right(ordered, cursor_key(after), key=lambda i: cursor_key(i.id)) if after else 0
        )
    except ControllerError as exc:
        raise bad_request(exc.message) from None
    chosen = ordered[start : start + limit]
    ids = {i.id for i in chosen}
    endpoints = [e for e in view.endpoints if "." not in e.name or e.name.split(".", 1)[1] in ids]
    more = start + limit < len(ordered)
    return DeploymentPage(
        deployment=msgspec.structs.replace(view, instances=chosen, endpoints=endpoints),
        total=len(ordered),
        next_cursor=chosen[-1].id if more else "",
    )


class _Rows:
    """The rows one answer reads, and when the newest was written."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.times: list[str] = []

    @property
    def written(self) -> str:
        return max(self.times) if self.times else ""

    async def read(self, keys: list[str], prefix: str | None = None) -> dict[str, Stored]:
        from fabric.replica.views import read_rows

        try:
            found = await read_rows(self.db, keys, prefix)
        except StoreUnavailable as exc:
            raise ApiError(
                503, "ServiceUnavailable", f"no leader answers and the database did not: {exc}"
            ) from None
        self.times += [row.written_at.isoformat(timespec="seconds") for row in found.values()]
        return found

    async def one(self, key: str) -> Stored:
        found = (await self.read([key])).get(key)
        if found is None:
            raise ApiError(
                503,
                "ServiceUnavailable",
                "no leader answers, and none has written the goal state's views yet",
            )
        return found

    async def subscriptions(self) -> list[SubscriptionRecord]:
        return subscriptions_of(await self.one(SUBSCRIPTIONS))

    async def subscription(self, subscription_id: str) -> SubscriptionRecord:
        wanted = subscription_id.lower()
        for s in await self.subscriptions():
            if s.id.lower() == wanted:
                return s
        raise not_found(f"subscription {subscription_id!r} does not exist; GET /subscriptions lists them")

    async def by_service(self) -> dict[str, list[DeploymentView]]:
        out: dict[str, list[DeploymentView]] = {}
        for row in (await self.read([], DEPLOYMENT)).values():
            view = view_of(row)
            out.setdefault(view.service.lower(), []).append(view)
        return out
