"""The chaos API: inject and undo faults, list targets, watch a deployment
(fabric.controller.chaos).

Routes (the same token as the rest of the API; ``?pool=`` picks a machine pool, by default the
pool of ``?service=`` or the fabric's only pool)::

    GET    /chaos/targets[?service=&slot=]     -> TargetMap (instances, hosts, endpoints, processes)
    GET    /chaos/faults                       -> FaultList
    POST   /chaos/faults        body Inject    -> FaultRecord (4xx when the target cannot be hit)
    DELETE /chaos/faults                       -> FaultList of what was undone
    DELETE /chaos/faults/{id}                  -> FaultRecord
    POST   /chaos/watches       body WatchStart -> WatchBatch
    GET    /chaos/watches/{id}?since=N         -> WatchBatch (renews the watch)
    DELETE /chaos/watches/{id}[?since=N]       -> WatchBatch (its last events)

Every request goes through FFE to the pool's controller, which hands it to its chaos agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from fabric.controller.chaos.messages import (
    ChaosCommand,
    GetTargets,
    Inject,
    ListFaults,
    Slot,
    Undo,
    WatchPoll,
    WatchStart,
    WatchStop,
)
from fabric.frontend._http import Request, Response
from fabric.frontend.api import ApiError, bad_request, not_found
from fabric.frontend.ffe import Forward, ListPools

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe


async def route(rdfe: Rdfe, r: Request, rest: list[str]) -> Response:
    """Answer one ``/chaos/...`` request."""
    match rest:
        case ["targets"]:
            rdfe._allow(r, "GET")
            service = r.query.get("service")
            return await _ask(rdfe, r, GetTargets(service=service, slot=_slot(r)))
        case ["faults"]:
            rdfe._allow(r, "GET", "POST", "DELETE")
            if r.method == "GET":
                return await _ask(rdfe, r, ListFaults())
            if r.method == "DELETE":
                return await _ask(rdfe, r, Undo())
            inject = await r.json(Inject)
            return await _ask(rdfe, r, inject, inject.fault.target.service)
        case ["faults", fault_id]:
            rdfe._allow(r, "DELETE")
            return await _ask(rdfe, r, Undo(id=fault_id))
        case ["watches"]:
            rdfe._allow(r, "POST")
            start = await r.json(WatchStart, default=WatchStart())
            return await _ask(rdfe, r, start, start.service)
        case ["watches", watch_id]:
            rdfe._allow(r, "GET", "DELETE")
            since = _int(r, "since")
            if r.method == "GET":
                return await _ask(rdfe, r, WatchPoll(id=watch_id, since=since))
            return await _ask(rdfe, r, WatchStop(id=watch_id, since=since))
    raise not_found(f"no chaos API at {r.path}; see fabric/frontend/chaos_routes.py")


async def _ask(rdfe: Rdfe, r: Request, request: Any, service: str | None = None) -> Response:
    pool = await _pool(rdfe, r, service or r.query.get("service"))
    return Response(200, await rdfe.ask_ffe(Forward(pool=pool, command=ChaosCommand(request))))


async def _pool(rdfe: Rdfe, r: Request, service: str | None) -> str:
    if "pool" in r.query:
        return r.query["pool"]
    if service is not None:
        for sub in rdfe.store.subscriptions:
            hosted = sub.hosted_services.get(service.lower())
            if hosted is not None and hosted.pool is not None:
                return hosted.pool
    pools = await rdfe.ask_ffe(ListPools())
    if len(pools) == 1:
        return pools[0].name
    names = ", ".join(p.name for p in pools)
    raise bad_request(f"this fabric has several machine pools ({names}): pass ?pool=NAME or ?service=NAME")


def _slot(r: Request) -> Slot:
    slot = r.query.get("slot", "production").lower()
    if slot not in ("production", "staging"):
        raise bad_request(f"slot {slot!r}: use production or staging", "InvalidQueryParameterValue")
    return cast(Slot, slot)


def _int(r: Request, name: str) -> int:
    try:
        return int(r.query.get(name, "0"))
    except ValueError:
        raise ApiError(400, "InvalidQueryParameterValue", f"{name} must be a whole number") from None
