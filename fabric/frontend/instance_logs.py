"""``GET .../deploymentslots/{slot}/roleinstances/{name}/logs[?file=F&offset=N&limit=N]``: the
logs of an instance on a joined host, read by that host over its link (`fabric logs`; a local
host's are read from the state folder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric.controller.instance_logs import ReadInstanceLog
from fabric.controller.messages import InstanceLog
from fabric.frontend._http import Request, Response
from fabric.frontend.api import ApiError, not_found
from fabric.frontend.ffe import Forward
from fabric.frontend.store import SubscriptionRecord
from fabric.host.messages import MAX_LOG_READ

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe


def _number(r: Request, name: str, default: int, high: int) -> int:
    text = r.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 16 or not 0 <= int(text) <= high:
        raise ApiError(400, "BadRequest", f"{name} must be a whole number from 0 to {high}")
    return int(text)


async def route(
    rdfe: Rdfe, sub: SubscriptionRecord, service: str, slot: str, instance: str, r: Request
) -> Response:
    """List the instance's logs (no ``file``), or read ``limit`` bytes of one from ``offset``."""
    from fabric.frontend.slots import parse_slot

    rdfe._allow(r, "GET")
    which = r.query.get("file", "")
    if len(which) > 200:
        raise ApiError(400, "BadRequest", "file names a log by its short name (fabric logs --list)")
    offset = _number(r, "offset", 0, 1 << 50)
    limit = _number(r, "limit", 256 * 1024, MAX_LOG_READ)
    hosted = rdfe.hosted(sub, service)
    if hosted.pool is None:
        raise not_found(f"hosted service {hosted.name!r} has no deployment")
    ask = ReadInstanceLog(
        service=hosted.name, slot=parse_slot(slot), instance=instance, which=which, offset=offset, limit=limit
    )
    log: InstanceLog = await rdfe.ask_ffe(Forward(pool=hosted.pool, command=ask))
    return Response(200, log)
