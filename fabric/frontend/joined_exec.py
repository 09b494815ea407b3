"""`fabric exec` in an instance on a joined host: the request line goes to the controller, which
relays it to the host over its link (fabric.controller.instance_exec); None when the instance is
on a local host (fabric.frontend.remote reaches its agent's socket itself)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fabric.controller.instance_exec import ExecInInstance, ExecRelayed
from fabric.frontend.ffe import Forward

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe


async def relay_exec(
    rdfe: Rdfe, sub_id: str, service: str, slot: str, instance: str, request: dict[str, Any], timeout: float
) -> dict[str, Any] | None:
    """The RemoteAccess agent's answer from the instance's joined host, or None (a local host,
    or no deployment: the local path answers that)."""
    from fabric.frontend.slots import parse_slot

    hosted = rdfe.hosted(rdfe.subscription(sub_id), service)
    if hosted.pool is None:
        return None
    ask = ExecInInstance(
        service=hosted.name,
        slot=parse_slot(slot),
        instance=instance,
        line=json.dumps(request).encode(),
        timeout=timeout,
    )
    relayed: ExecRelayed = await rdfe.ask_ffe(
        Forward(pool=hosted.pool, command=ask, timeout=timeout + 30), timeout=timeout + 60
    )
    if relayed.answer is None:
        return None
    answer: dict[str, Any] = json.loads(relayed.answer)
    return answer
