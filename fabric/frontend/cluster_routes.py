"""The cluster API: bootstrap tokens and joined hosts (fabric.cluster).

Routes (the same token as the rest of the API)::

    GET    /cluster/tokens            -> [TokenInfo]   (never a secret)
    POST   /cluster/tokens            {ttl, description} -> NewToken (the whole token, shown once)
    DELETE /cluster/tokens/{id}       revoke it
    GET    /cluster/hosts             -> [JoinedHostView]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.to_thread
import msgspec

from fabric.cluster.ca import ClusterCA
from fabric.cluster.port import JoinedHostView, cluster_dir, read_hosts, read_listen
from fabric.cluster.tokens import DEFAULT_TTL, MAX_TTL, NewToken, TokenInfo, TokenStore
from fabric.frontend._http import Request, Response
from fabric.frontend.api import bad_request, not_found

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe


class CreateToken(msgspec.Struct, frozen=True, kw_only=True):
    """The body of POST /cluster/tokens."""

    ttl: float = DEFAULT_TTL
    description: str = ""


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
            return Response(200, await anyio.to_thread.run_sync(read_hosts, rdfe.state_dir))
    raise not_found(f"no API at {r.path}; see fabric/frontend/cluster_routes.py")


__all__ = ["CreateToken", "JoinedHostView", "NewToken", "TokenInfo", "route"]
