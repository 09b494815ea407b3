"""Link faults: messages on an actor link dropped, delayed (with jitter) or cut.

The controller's link to a host agent is a Ref in this process: its fault hook is set here.
A host agent's link to a VM lives in the host agent's process: it is asked to set that one
(fabric.host.messages.GuestLinkFault). One fault per link at a time, so an undo never clears
another fault's rules.
"""

from __future__ import annotations

from actors import ActorError, AskTimeout, LinkFaults
from fabric.controller.chaos import targets
from fabric.controller.chaos.faults import Applied, World
from fabric.controller.chaos.messages import Hit, LinkFault, Partition
from fabric.controller.hosts import HostUnavailable
from fabric.controller.model import Deployment
from fabric.controller.state import ControllerState
from fabric.host.messages import GuestLinkAction, GuestLinkApplied, GuestLinkFault, GuestLinkUnavailable


async def link_fault(world: World, fault: LinkFault | Partition) -> Applied:
    """Apply a link fault (a partition is a cut both ways).

    Raises:
        ControllerError: no such host or instance, no fault hook, or the link is faulted already.
    """
    t, state = fault.target, world.state
    dep = targets.deployment(state, t.service, t.slot)
    if isinstance(fault, Partition):
        fault = LinkFault(target=t, link=fault.link, cut=True, direction="both", duration=fault.duration)
    if not (fault.cut or fault.drop or fault.delay or fault.jitter):
        raise targets.refuse("a link fault needs cut, drop, delay or jitter")
    try:
        what = _describe_link(fault)
        if fault.link == "host":
            return _host_link(world, dep, fault, what)
        return await _guest_link(world, dep, fault, what)
    except ValueError as exc:  # LinkFaults refuses a probability or delay out of range
        raise targets.refuse(str(exc)) from None


def _describe_link(f: LinkFault) -> str:
    if f.cut:
        return f"cut ({f.direction})"
    parts = []
    if f.drop:
        parts.append(f"drop {f.drop:.0%}")
    if f.delay or f.jitter:
        parts.append(f"delay {f.delay:g}+{f.jitter:g} s")
    return ", ".join(parts) + f" ({f.direction})"


def _host_link(world: World, dep: Deployment, fault: LinkFault, what: str) -> Applied:
    state = world.state
    host_id = targets.host_id(state, dep, fault.target)
    host = state.hosts.hosts[host_id]
    faults = host.ref.faults if host.ref is not None else None
    if faults is None:
        raise targets.refuse(
            f"host {host_id} has no link with fault hooks (not a host process)", "ConflictError", 409
        )
    key = ("link", f"host:{host_id}")
    if key in world.held:
        raise targets.refuse(
            f"the link to host {host_id} is already faulted; undo that fault first", "ConflictError", 409
        )
    _set_link(faults, fault)
    world.held.add(key)
    ref = host.ref

    async def clear() -> str:
        world.held.discard(key)
        faults.clear(fault.direction)
        return f"link to host {host_id} cleared"

    instances = [i.id for i in dep.ordered() if i.host_id == host_id]
    hit = Hit(
        what="link",
        name=f"controller<->{host_id}",
        pid=(ref.pid or 0) if ref else 0,
        host=host_id,
        detail=what,
    )
    return Applied([hit], instances, undo=clear, detail=f"controller<->{host_id}: {what}")


def _set_link(faults: LinkFaults, f: LinkFault) -> None:
    if f.seed is not None:
        faults.reseed(f.seed)
    if f.cut:
        faults.cut(f.direction)
        return
    if f.drop:
        faults.drop(f.drop, f.direction)
    if f.delay or f.jitter:
        faults.delay(f.delay, f.jitter, f.direction)


async def _guest_link(world: World, dep: Deployment, fault: LinkFault, what: str) -> Applied:
    state = world.state
    inst = targets.instance(dep, fault.target)
    if not inst.host_id:
        raise targets.refuse(
            f"instance {inst.id} has no host now (it is moving); try again", "ConflictError", 409
        )
    host_id, key = inst.host_id, ("link", f"guest:{inst.vm}")
    if key in world.held:
        raise targets.refuse(
            f"the link to {inst.id} is already faulted; undo that fault first", "ConflictError", 409
        )
    steps = [_guest_message(inst.vm, a, fault) for a in _actions(fault)]
    answer: GuestLinkApplied | None = None
    for step in steps:
        answer = await _ask_host(state, host_id, step)
    world.held.add(key)

    async def clear() -> str:
        world.held.discard(key)
        message = GuestLinkFault(instance_id=inst.vm, action="clear", direction=fault.direction)
        try:
            await _ask_host(state, host_id, message)
        except Exception as exc:  # the host or the VM is gone: nothing left to clear
            return f"link to {inst.id} not cleared ({exc}); its VM has a fresh link when it boots"
        return f"link to {inst.id} cleared"

    pid = answer.pid if answer is not None else 0
    hit = Hit(
        what="link", name=f"{host_id}<->{inst.id}", pid=pid, instance=inst.id, host=host_id, detail=what
    )
    return Applied([hit], [inst.id], undo=clear, detail=f"{host_id}<->{inst.id}: {what}")


def _actions(f: LinkFault) -> list[GuestLinkAction]:
    if f.cut:
        return ["cut"]
    actions: list[GuestLinkAction] = []
    if f.drop:
        actions.append("drop")
    if f.delay or f.jitter:
        actions.append("delay")
    return actions


def _guest_message(vm: str, action: GuestLinkAction, f: LinkFault) -> GuestLinkFault:
    return GuestLinkFault(
        instance_id=vm,
        action=action,
        direction=f.direction,
        probability=f.drop,
        seconds=f.delay,
        jitter=f.jitter,
        seed=f.seed,
    )


async def _ask_host(state: ControllerState, host_id: str, message: GuestLinkFault) -> GuestLinkApplied:
    try:
        answer: GuestLinkApplied = await state.hosts.ask(host_id, message, 5.0)
    except (HostUnavailable, AskTimeout) as exc:
        raise targets.refuse(
            f"host {host_id} cannot take the fault now: {exc}", "ConflictError", 409
        ) from None
    except ActorError as exc:
        refusal = exc.caused_by(GuestLinkUnavailable)
        if refusal is None:
            raise  # a bug in the host agent, not a refusal
        raise targets.refuse(str(refusal), "ConflictError", 409) from None
    return answer
