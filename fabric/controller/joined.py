"""The controller's side of joined hosts: their heartbeats (learning, reviving, reconciling;
their instances' ports are chosen in fabric.controller.host_ports).

Reconciling, the goal state wins: a VM a joined host reports that the controller no longer
places there (it was declared dead and its instances healed elsewhere, or the deployment went)
is stopped and its disk deleted; when the host's agent is a new incarnation (it restarted, or
this controller did, or its link dropped under a request), the instances placed there are
started again (a VM that still runs is left as it is: StartGuest is idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from actors import ActorError, AskTimeout
from fabric.controller import host_reach, lifecycle
from fabric.controller.hosts import Host, HostUnavailable, JoinedReport
from fabric.controller.messages import ControllerError
from fabric.controller.model import Deployment, Instance
from fabric.controller.state import ControllerState
from fabric.host.messages import StopGuest

log = logging.getLogger("fabric.controller")

Spawn = Callable[..., None]
#: a host's stale VMs stopped at once: more wait for a later heartbeat (a host naming thousands
#: of VMs it does not own would otherwise get a task, an ask and a timeline event for each)
MAX_STALE_STOPS = 16


async def on_report(state: ControllerState, report: JoinedReport, spawn: Spawn) -> None:
    """A joined host's heartbeat (relayed by fabric-hosts)."""
    beat = report.heartbeat
    host, record, fresh = state.hosts.heard_joined(beat, report.agent, report.at)
    if record is not None:
        try:
            async with state.store.transaction() as tx:
                tx.put(record)
        except ControllerError as exc:  # the store is out (a replica): the host is used anyway
            log.warning("host %s is not stored now: %s", host.id, exc.message)
        state.events.record("heal", f"host {host.id} ({host.address}) is heard", host=host.id)
        state.wake_healer()
    owned = {inst.vm: (dep, inst) for dep, inst in state.instances() if inst.host_id == host.id}
    for vm, status in beat.instances.items():
        if vm in owned:
            inst = owned[vm][1]
            if inst.address != host.address:  # known before it starts again (a controller restart)
                inst.address = host.address
            await state.on_status(host.id, vm, status)
        elif vm not in host.stopping and len(host.stopping) < MAX_STALE_STOPS:
            host.stopping.add(vm)
            spawn(_stop_stale, state, host, vm)
    host_reach.heard(state, host)  # its instances back in rotation (after their statuses)
    if fresh:
        for dep, inst in owned.values():
            if dep.goal == "Running" and not inst.lock.locked() and inst.status != "StoppedVM":
                spawn(_start_again, state, dep, inst)


async def _stop_stale(state: ControllerState, host: Host, vm: str) -> None:
    """Stop a VM a joined host runs without owning it (its instance lives elsewhere now)."""
    log.warning("host %s runs %s, which it no longer owns: stopping it", host.id, vm)
    state.events.record("heal", f"host {host.id}: its stale VM {vm} is stopped", host=host.id)
    try:
        await state.hosts.ask(
            host.id, StopGuest(instance_id=vm, delete_disk=True), lifecycle.slow_timeout(state)
        )
    except (HostUnavailable, ActorError, AskTimeout) as exc:
        log.error("host %s: stopping its stale VM %s failed: %s", host.id, vm, exc)
    finally:
        host.stopping.discard(vm)


async def _start_again(state: ControllerState, dep: Deployment, inst: Instance) -> None:
    try:
        await lifecycle.start(state, dep, inst)
    except ControllerError as exc:
        log.error("starting %s again on host %s: %s", inst.id, inst.host_id, exc.message)


async def prune_forever(state: ControllerState) -> None:
    """Remove the packed tars no deployment uses, for ever (while joined hosts are known)."""
    while True:
        await anyio.sleep(max(1.0, state.settings.package_prune_after / 2))
        if any(h.joined for h in state.hosts.hosts.values()):
            try:
                await state.hosts.prune_packed()
            except OSError as exc:
                log.error("removing unused packed packages failed: %s", exc)
