"""The cluster API: bootstrap tokens and joined hosts (fabric.cluster).

Routes (the same token as the rest of the API)::

    GET    /cluster/tokens            -> [TokenInfo]   (never a secret)
    POST   /cluster/tokens            {ttl, description} -> NewToken (the whole token, shown once)
    DELETE /cluster/tokens/{id}       revoke it
    GET    /cluster/hosts?offset=&limit=&pool=   -> HostPage (every host, local and joined)
    POST   /cluster/hosts/{name}/cordon          -> HostView (no new instance goes there)
    POST   /cluster/hosts/{name}/uncordon        -> HostView
    POST   /cluster/hosts/{name}/drain           -> 202, x-ms-request-id (cordon, move its instances)
    DELETE /cluster/hosts/{name}                 forget a joined host (no instance on it), revoke its certificate
    GET    /cluster/operations/{request_id}      -> OperationView (a drain's progress)

A host request goes to the pool named by ``pool`` (default: the first; a host name is looked
for in every pool). Refusals: 400 bad numbers, 404 unknown host, 409 not now (nothing changed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.to_thread

from fabric.cluster.ca import ClusterCA
from fabric.cluster.port import JoinedHostView, cluster_dir, read_hosts, read_listen
from fabric.cluster.revocations import Revocations
from fabric.cluster.tokens import MAX_TTL, CreateToken, NewToken, TokenInfo, TokenStore
from fabric.controller.host_admin import MAX_PAGE, CordonHost, DrainHost, ListHosts, RemoveHost
from fabric.controller.messages import GetOperation, HostPage, HostView, OperationAccepted, OperationView
from fabric.frontend._http import Request, Response
from fabric.frontend.api import ApiError, bad_request, not_found
from fabric.frontend.ffe import Forward, ListPools, PoolInfo

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe


def _create(rdfe: Rdfe, body: CreateToken) -> NewToken:
    folder = cluster_dir(rdfe.state_dir)
    ca = ClusterCA.open(folder)
    token, record = TokenStore(folder).create(body.ttl, body.description)
    return NewToken(
        token=token,
        id=record.id,
        expires=record.expires,
        ca_hash=ca.hash,
        address=read_listen(rdfe.state_dir),
    )


async def route(rdfe: Rdfe, r: Request, rest: list[str]) -> Response:
    """Answer one ``/cluster/...`` request."""
    store = TokenStore(cluster_dir(rdfe.state_dir))
    match rest:
        case ["tokens"]:
            rdfe._allow(r, "GET", "POST")
            if r.method == "GET":
                return Response(200, await anyio.to_thread.run_sync(store.list))
            r.limit_body(4096)
            body = await r.json(CreateToken, default=CreateToken())
            if not 1 <= body.ttl <= MAX_TTL or len(body.description) > 200:
                raise bad_request(
                    f"ttl must be 1 to {MAX_TTL:g} seconds and the description at most 200 characters"
                )
            return Response(201, await anyio.to_thread.run_sync(_create, rdfe, body))
        case ["tokens", token_id]:
            rdfe._allow(r, "DELETE")
            if not await anyio.to_thread.run_sync(store.delete, token_id):
                raise not_found(f"there is no token {token_id!r} (expired tokens are forgotten)")
            return Response(200)
        case ["hosts"]:
            rdfe._allow(r, "GET")
            offset, limit = _number(r, "offset", 0, 10**9), _number(r, "limit", 1, MAX_PAGE, 100)
            pool = (await _pools(rdfe, r))[0]
            return Response(
                200, await rdfe.ask_ffe(Forward(pool=pool, command=ListHosts(offset=offset, limit=limit)))
            )
        case ["hosts", name]:
            rdfe._allow(r, "DELETE")
            return await _remove(rdfe, await _pools(rdfe, r), name)
        case ["hosts", name, ("cordon" | "uncordon" | "drain") as action]:
            rdfe._allow(r, "POST")
            command: CordonHost | DrainHost = (
                DrainHost(name=name)
                if action == "drain"
                else CordonHost(name=name, cordon=action == "cordon")
            )
            answer = await _in_pool_of(rdfe, await _pools(rdfe, r), command)
            if isinstance(answer, OperationAccepted):
                return Response(202, answer, {"x-ms-request-id": answer.request_id})
            return Response(200, answer)
        case ["operations", request_id] if len(request_id) <= 64:
            rdfe._allow(r, "GET")
            found = await _in_pool_of(rdfe, await _pools(rdfe, r), GetOperation(request_id=request_id))
            return Response(200, found)
    raise not_found(f"no API at {r.path}; see fabric/frontend/cluster_routes.py")


async def _remove(rdfe: Rdfe, pools: list[str], name: str) -> Response:
    """Check the host may go (no instance placed: 409), revoke its certificates (from now on it
    is neither linked nor heard), then forget it in its pool."""
    known = []
    for pool in pools:
        try:
            await rdfe.ask_ffe(Forward(pool=pool, command=RemoveHost(name=name, check=True)))
        except ApiError as exc:
            if exc.status != 404:
                raise
            continue
        known.append(pool)
    folder = cluster_dir(rdfe.state_dir)
    joined = name in {h.name for h in await anyio.to_thread.run_sync(read_hosts, rdfe.state_dir)}
    revoked = await anyio.to_thread.run_sync(Revocations(folder).revoke, name) if known or joined else 0
    if not (known or joined or revoked):
        raise not_found(f"there is no joined host {name!r}; see `fabric hosts`")
    for pool in known:
        await rdfe.ask_ffe(Forward(pool=pool, command=RemoveHost(name=name)))
    return Response(200)


def _number(r: Request, name: str, low: int, high: int, default: int = 0) -> int:
    text = r.query.get(name)
    if text is None:
        return default
    # ASCII digits only: isdigit() takes others int() refuses (a 500), and no 10,000 of them
    if not (text.isascii() and text.isdigit() and len(text) < 19) or not low <= int(text) <= high:
        raise bad_request(f"{name} must be a whole number from {low} to {high}")
    return int(text)


async def _pools(rdfe: Rdfe, r: Request) -> list[str]:
    """The pool named by ``?pool=`` (400 when there is none of that name), else every pool."""
    pools: list[PoolInfo] = await rdfe.ask_ffe(ListPools())
    names = [p.name for p in pools]
    wanted = r.query.get("pool")
    if wanted is None:
        return names
    if wanted not in names:
        raise bad_request(f"there is no machine pool {wanted!r}; use one of: {', '.join(names)}")
    return [wanted]


async def _in_pool_of(
    rdfe: Rdfe, pools: list[str], command: CordonHost | DrainHost | GetOperation
) -> HostView | OperationAccepted | OperationView:
    """Ask each pool in turn until one knows the host (or operation); its 404 when none does."""
    missing: ApiError | None = None
    for pool in pools:
        try:
            return await rdfe.ask_ffe(Forward(pool=pool, command=command))
        except ApiError as exc:
            if exc.status != 404:
                raise
            missing = exc
    assert missing is not None
    raise missing


__all__ = [
    "CreateToken",
    "HostPage",
    "HostView",
    "JoinedHostView",
    "NewToken",
    "OperationView",
    "TokenInfo",
    "route",
]
