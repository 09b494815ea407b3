"""Applying each kind of fault in the fabric's process, and how each lasting one is undone.

``apply(world, fault)`` finds the target in the live tree, does the damage at once and answers
an Applied: what it hit, and for a lasting fault the coroutine that undoes it. Processes are
signalled by pid and resumed only while still the same process (pid and start time), so an
undo never touches a pid the system has reused.

Link faults live in fabric.controller.chaos.links, disk faults in storage, the storm in storm.

Signals: kill is SIGKILL; crash is SIGABRT (the process dies as on a fatal internal error, with
its core file size limited to 0 first so no core lands on disk); hang is SIGSTOP, undone by
SIGCONT. A whole host is every process under its host agent: each of their process groups is
killed (VMs and role hosts run in sessions of their own), or each process stopped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec

from actors import Ref
from fabric.controller.chaos import joined, targets
from fabric.controller.chaos.messages import (
    ConfigStorm,
    Crash,
    Fault,
    FillStorage,
    Hang,
    Hit,
    Kill,
    LinkFault,
    NetworkFault,
    Partition,
    StartupFault,
    ToxicFault,
)
from fabric.controller.chaos.tree import Proc, ProcessMap, scan
from fabric.controller.client import ask
from fabric.controller.messages import InstanceAction
from fabric.controller.model import Deployment, Instance
from fabric.controller.state import ControllerState
from fabric.host.messages import SignalVm, VmProcess
from fabric.host.processes import Action, signal_processes
from fabric.host.processes import kill_processes as kill_processes  # storage's
from fabric.network import UnknownToxicError

#: A chaos file may not be larger than this (a LocalStorage of a huge sizeInMB would fill the disk).
MAX_FILL_MB = 4096
FILL_NAME = "chaos-fill.bin"

SIGNALS = {"kill": "SIGKILL", "crash": "SIGABRT", "stop": "SIGSTOP"}

Undo = Callable[[], Awaitable[str]]
Background = Callable[[Callable[[str], None]], Awaitable[None]]


@dataclass
class Applied:
    """What a fault hit; ``undo`` ends a lasting one; ``background`` is its long-running part."""

    hits: list[Hit]
    instances: list[str] = field(default_factory=list)
    undo: Undo | None = None
    background: Background | None = None
    detail: str = ""
    #: when the damage was done, if before apply returned (a fault that then waits, e.g. a reboot)
    at: float | None = None


@dataclass
class World:
    """What faults act on: the controller's live state and Ref, and the process tree."""

    state: ControllerState
    controller: Ref
    #: (kind, key) of links and processes held by an active fault: a second one is refused
    held: set[tuple[str, str]] = field(default_factory=set)

    async def scan(self) -> ProcessMap:
        """The fabric's process tree now."""
        return await anyio.to_thread.run_sync(scan, os.getpid())


async def apply(world: World, fault: Fault) -> Applied:
    """Apply ``fault`` now.

    Raises:
        ControllerError: the target does not exist or cannot be hit now (the message says why).
    """
    match fault:
        case Kill() | Crash() | Hang():
            return await _process_fault(world, fault)
        case LinkFault() | Partition():
            from fabric.controller.chaos.links import link_fault

            return await link_fault(world, fault)
        case ToxicFault():
            return await _toxic(world, fault)
        case StartupFault():
            from fabric.controller.chaos.storage import startup

            return await startup(world, fault)
        case FillStorage():
            from fabric.controller.chaos.storage import fill

            return await fill(world, fault)
        case ConfigStorm():
            from fabric.controller.chaos.storm import storm

            return storm(world, fault)
        case NetworkFault():
            from fabric.controller.chaos.net import net_fault

            return await net_fault(world, fault)
    raise targets.refuse(f"unknown fault {type(fault).__name__}")


# -- processes ---------------------------------------------------------------------------------------


async def _process_fault(world: World, fault: Kill | Crash | Hang) -> Applied:
    t, state = fault.target, world.state
    if t.place is None:
        raise targets.refuse("name the process to hit: a place (role-host, bootstrapper, host, ...)")
    if t.place == "host" and isinstance(fault, Crash):
        raise targets.refuse("a whole host can be killed or hung, not crashed; crash its host-agent")
    dep = targets.deployment(state, t.service, t.slot)
    if t.place in ("host", "host-agent"):
        host = targets.host_id(state, dep, t)
        if state.hosts.hosts[host].joined:
            return await _joined_host_fault(world, fault, dep, host)
        procs = await world.scan()
        hit = procs.of_host(host) if t.place == "host" else [p for p in [procs.host_agent(host)] if p]
        instances = [i.id for i in dep.ordered() if i.host_id == host]
        where = f"host {host}"
    else:
        inst = targets.instance(dep, t)
        joined = state.hosts.hosts.get(inst.host_id)
        if joined is not None and joined.joined:
            return await _joined_process_fault(world, fault, inst)
        procs = await world.scan()
        hit = procs.of_vm(inst.vm, t.place)
        instances = [inst.id]
        where = f"instance {inst.id} ({inst.status})"
    if not hit:
        raise targets.refuse(f"no {t.place} process runs for {where} now", "ConflictError", 409)
    ids = {i.vm: i.id for i in dep.ordered()}
    hits = [_hit(p, ids) for p in hit]
    if not isinstance(fault, Hang):
        action: Action = "kill" if isinstance(fault, Kill) else "crash"
        signal_processes(hit, action, whole_host=t.place == "host")
        return Applied(hits, instances, detail=f"{SIGNALS[action]} {_pids(hit)}")
    keys = [("process", f"{p.pid}:{p.started}") for p in hit]
    if any(k in world.held for k in keys):
        raise targets.refuse(
            f"{_pids(hit)} is already hung by another fault; undo it first", "ConflictError", 409
        )
    signal_processes(hit, "stop")
    world.held.update(keys)

    async def resume() -> str:
        world.held.difference_update(keys)
        resumed = await anyio.to_thread.run_sync(signal_processes, hit, "resume")
        gone = len(hit) - len(resumed)
        return f"SIGCONT {_pids(resumed) or 'nothing'}" + (f"; {gone} gone meanwhile" if gone else "")

    return Applied(hits, instances, undo=resume, detail=f"SIGSTOP {_pids(hit)}")


async def _joined_process_fault(world: World, fault: Kill | Crash | Hang, inst: Instance) -> Applied:
    """The same fault on an instance of a joined host: its agent signals the processes there
    (SignalVm over its link, with the code this machine uses for its own: fabric.host.processes)."""
    host, place = inst.host_id, fault.target.place
    vm_place = "vm" if place in ("guest-agent", "app-agent") else place
    assert vm_place in ("vm", "bootstrapper", "role-host", "web-worker")
    action: Action = "kill" if isinstance(fault, Kill) else "crash" if isinstance(fault, Crash) else "stop"
    key = ("process", f"{host}/{inst.vm}/{vm_place}")
    if action == "stop" and key in world.held:
        raise targets.refuse(
            f"{place} of {inst.id} is already hung by another fault; undo it first", "ConflictError", 409
        )
    # A stop is ended by the host itself too, should the controller no longer reach it.
    seconds = joined.vm_stop_seconds(fault) if isinstance(fault, Hang) else 0.0
    request = SignalVm(instance_id=inst.vm, place=vm_place, action=action, duration=seconds)
    found = await _ask_joined(world, host, request)
    if not found:
        raise targets.refuse(
            f"no {place} process runs for instance {inst.id} ({inst.status}) now", "ConflictError", 409
        )
    hit = [Proc(p.pid, 0, p.pgid, p.name, p.started, p.place, inst.vm, host) for p in found]
    hits = [_hit(p, {inst.vm: inst.id}) for p in hit]
    detail = f"{SIGNALS[action]} {_pids(hit)} on host {host}"
    if action != "stop":
        return Applied(hits, [inst.id], detail=detail)
    world.held.add(key)

    async def resume() -> str:
        world.held.discard(key)
        again = SignalVm(
            instance_id=inst.vm, place=vm_place, action="resume", processes=[(p.pid, p.started) for p in hit]
        )
        resumed = await _ask_joined(world, host, again)
        names = {p.pid: p.name for p in hit}
        back = [msgspec.structs.replace(p, name=names.get(p.pid, p.name)) for p in resumed]
        gone = len(hit) - len(back)
        text = ", ".join(f"{p.name} (pid {p.pid})" for p in back) or "nothing"
        return f"SIGCONT {text} on host {host}" + (f"; {gone} gone meanwhile" if gone else "")

    renew = None
    if isinstance(fault, Hang) and not fault.duration:  # until undone: a lease, renewed meanwhile
        renew = partial(joined.renew_forever, world.state, host, inst.vm, [(p.pid, p.started) for p in hit])
    return Applied(hits, [inst.id], undo=resume, background=renew, detail=detail)


async def _joined_host_fault(world: World, fault: Kill | Crash | Hang, dep: Deployment, host: str) -> Applied:
    """The same fault on a joined host's own processes (fabric.controller.chaos.joined)."""
    hits, instances, detail, seconds, hang = await joined.host_fault(
        world.state, world.held, fault, dep, host
    )
    if seconds is None:
        return Applied(hits, instances, detail=detail)

    async def ended() -> str:
        world.held.discard(("process", f"{host}/host"))
        joined.mark_undone(host, hang)
        return (
            f"host {host} resumes its processes itself: its backstop asks the join port every "
            "half second (a stopped host cannot be reached over its link)"
        )

    return Applied(hits, instances, undo=ended, detail=detail)


async def _ask_joined(world: World, host: str, request: SignalVm) -> list[VmProcess]:
    """Ask a joined host's agent to signal (a refusal when it cannot be reached or answer)."""
    return await joined.ask_host(world.state, host, request, list[VmProcess])


def _hit(p: Proc, ids: dict[str, str]) -> Hit:
    return Hit(
        what="process",
        name=p.name,
        pid=p.pid,
        started=p.started,
        instance=ids.get(p.instance, p.instance),
        host=p.host,
        detail=p.place,
    )


def _pids(procs: list[Proc]) -> str:
    return ", ".join(f"{p.name} (pid {p.pid})" for p in procs)


# -- load balancer toxics ----------------------------------------------------------------------------


async def _toxic(world: World, fault: ToxicFault) -> Applied:
    state, t = world.state, fault.target
    dep = targets.deployment(state, t.service, t.slot)
    name, lb = targets.balancer(state, dep, t.endpoint)
    toxic_id = lb.add_toxic(fault.toxic)
    spec = msgspec.json.encode(fault.toxic).decode()
    # New connections take the user-space path (and the toxic) once the kernel's rules follow;
    # those the kernel data path opened before are left alone (README, load balancer).
    await lb.synced()

    async def remove() -> str:
        with contextlib.suppress(UnknownToxicError):
            lb.remove_toxic(toxic_id)
        await lb.synced()
        return f"toxic {toxic_id} removed from {name}"

    hit = Hit(what="endpoint", name=f"{dep.service}/{name}", detail=f"{toxic_id} {spec}")
    return Applied([hit], [], undo=remove, detail=f"{name}: {spec}")


# -- helpers for the storage and storm faults ---------------------------------------------------------


def vm_root(world: World, dep: Deployment, inst: Instance) -> Path:
    """The VM folder of an instance (its disk)."""
    config = dep.guest_config(inst, world.state.state_dir, world.state.settings)
    return Path(config.vm_root)


async def reboot(world: World, dep: Deployment, inst: Instance) -> str:
    """Ask the controller to reboot one instance (answers at once; the reboot goes on)."""
    action = InstanceAction(
        service=dep.service,
        slot=dep.slot,
        instance_id=inst.id,
        action="reboot",
    )
    await ask(world.controller, action, timeout=30.0)
    return f"rebooting {inst.id}"
