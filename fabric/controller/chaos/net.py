"""Network faults (partition, loss, bandwidth, delay) on a joined host's own machine.

The controller asks the host's agent for a fabric.host.net_faults.NetFault; the host applies it
with nftables or tc and undoes it itself at its end (a partition cuts this controller's link,
so an undo from here may never arrive). A delay on a host whose kernel has no netem is done
from here instead (fabric.controller.chaos.net_delay). A local host shares the fabric's
machine: a network fault there would cut the fabric itself off, so it is refused.
"""

from __future__ import annotations

import secrets

from actors import ActorError, AskTimeout
from fabric.controller.chaos import targets
from fabric.controller.chaos.faults import Applied, World
from fabric.controller.chaos.messages import Hit, NetworkFault
from fabric.controller.chaos.net_delay import delay_without_netem
from fabric.controller.hosts import Host, HostUnavailable
from fabric.controller.messages import ControllerError
from fabric.controller.model import Deployment
from fabric.controller.state import ControllerState
from fabric.host.net_faults import NetemMissing, NetFault, NetFaultApplied, NetFaultRefused

#: seconds a host has to apply a network fault (a few commands), and to clear one: shorter, as
#: a host cut off by a partition cannot answer (it undoes the fault itself at its end), and the
#: chaos agent gives an undo 10 s
ASK_TIMEOUT = 15.0
CLEAR_TIMEOUT = 5.0


def host_request(fault: NetworkFault, fault_id: str) -> NetFault:
    """The NetFault a host is asked for (exactly one of partition, loss, bandwidth, delay).

    Raises:
        ControllerError: none or several given, or no duration.
    """
    given = [
        name
        for name, on in (
            ("partition", fault.partition),
            ("loss", fault.loss > 0),
            ("bandwidth", fault.bandwidth > 0),
            ("delay", fault.delay > 0 or fault.jitter > 0),
        )
        if on
    ]
    if len(given) != 1:
        raise targets.refuse("give exactly one of partition, loss, bandwidth or delay (with jitter)")
    if fault.duration is None or fault.duration <= 0:
        raise targets.refuse(
            "a network fault needs a duration: the host undoes it itself at its end "
            "(a partition cuts the controller off)"
        )
    return NetFault(
        id=fault_id,
        action=given[0],  # type: ignore[arg-type]
        percent=fault.loss,
        rate=fault.bandwidth,
        delay=fault.delay,
        jitter=fault.jitter,
        duration=fault.duration,
    )


async def net_fault(world: World, fault: NetworkFault) -> Applied:
    """Apply a network fault on the target's host.

    Raises:
        ControllerError: no such host, a local host, a bad fault, or the host refused it.
    """
    state, t = world.state, fault.target
    # A host is named alone (no deployment needed) or found as an instance's.
    dep = (
        _deployment_or_none(state, t.service, t.slot)
        if t.host
        else targets.deployment(state, t.service, t.slot)
    )
    host_id = t.host if t.host else targets.host_id(state, dep, t) if dep else ""
    host = state.hosts.hosts.get(host_id)
    if host is None or not host.alive:
        live = ", ".join(h.id for h in state.hosts.live()) or "none"
        raise targets.refuse(f"no live host {host_id!r}; the live hosts are {live}", "ResourceNotFound", 404)
    instances = [i.id for i in dep.ordered() if i.host_id == host_id] if dep else []
    # (Host.joined comes with joined hosts running a host agent; a pool without it has local ones.)
    # (A replica's local host is linked as a joined one, on the fabric's machine all the same.)
    if not getattr(host, "joined", False) or getattr(host, "launched", False):
        raise targets.refuse(
            f"host {host_id} runs on the fabric's own machine: a network fault there would cut the "
            f"fabric itself off; use `fabric chaos partition --host {host_id}` or `fabric chaos link` "
            "(its actor link) instead",
            "ConflictError",
            409,
        )
    request = host_request(fault, f"nf{secrets.token_hex(4)}")
    key = ("net", f"{host_id}:{request.action}")
    if key in world.held:
        raise targets.refuse(
            f"a {request.action} fault is already in force on host {host_id}; undo it first",
            "ConflictError",
            409,
        )
    try:
        answer = await _ask(state, host_id, request)
    except NetemMissing:
        return await _delay_here(world, fault, host, key, instances)
    world.held.add(key)

    async def clear() -> str:
        world.held.discard(key)
        try:
            done = await _ask(state, host_id, NetFault(id=request.id, action="clear"), CLEAR_TIMEOUT)
        except ControllerError as exc:
            return f"not cleared from here ({exc.message}); the host undoes it itself at its end"
        return f"{host_id}: {done.detail}"

    hit = Hit(what="link", name=f"network of {host_id}", host=host_id, detail=answer.detail)
    return Applied([hit], instances, undo=clear, detail=f"{host_id}: {answer.detail}")


async def _delay_here(
    world: World, fault: NetworkFault, host: Host, key: tuple[str, str], instances: list[str]
) -> Applied:
    """The delay a host without netem refused, on its link and load balancers instead."""
    detail, undo = await delay_without_netem(world.state, world.held, host, fault.delay, fault.jitter)
    world.held.add(key)

    async def clear() -> str:
        world.held.discard(key)
        return f"{host.id}: {await undo()}"

    hit = Hit(what="link", name=f"network of {host.id}", host=host.id, detail=detail)
    return Applied([hit], instances, undo=clear, detail=f"{host.id}: {detail}")


def _deployment_or_none(state: ControllerState, service: str | None, slot: str) -> Deployment | None:
    try:
        return targets.deployment(state, service, slot)
    except ControllerError:
        return None


async def _ask(
    state: ControllerState, host_id: str, message: NetFault, timeout: float = ASK_TIMEOUT
) -> NetFaultApplied:
    try:
        answer: NetFaultApplied = await state.hosts.ask(host_id, message, timeout)
    except (HostUnavailable, AskTimeout) as exc:
        raise targets.refuse(
            f"host {host_id} cannot take the fault now: {exc}", "ConflictError", 409
        ) from None
    except ActorError as exc:
        refusal = exc.caused_by(NetFaultRefused)
        if refusal is None:
            raise  # a bug in the host agent, not a refusal
        if isinstance(refusal, NetemMissing):
            raise refusal from None  # the delay is done otherwise (_delay_here)
        raise targets.refuse(f"host {host_id}: {refusal}", "ConflictError", 409) from None
    return answer
