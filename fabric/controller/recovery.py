"""Coming back after the fabric was killed: read the store and bring every deployment back.

Each deployment returns as it was: the same instances on the same hosts (spun up again under
their old ids), the same public ports when they are still free, suspended ones still
suspended. Work cut short resumes: a delete finishes, an Auto or Simultaneous walk carries on
(a Manual one waits for its next walk again). An operation cut short whose work resumes (a
deployment being created, upgraded, reconfigured, started or deleted) keeps its request id and
ends Succeeded or Failed when the resumed work does: what was acknowledged is completed, by this
controller after a restart or by a new leader after a failover. Other operations that were
running (a Manual walk, a swap, a suspend) read Failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

from actors import LinkOptions
from fabric.controller.commands import finish_delete, start_all
from fabric.controller.generations import load_generation
from fabric.controller.messages import ControllerError
from fabric.controller.model import Deployment, Generation, Instance
from fabric.controller.operations import Operations
from fabric.controller.state import ControllerState
from fabric.controller.store import OperationRecord
from fabric.controller.upgrade import Upgrades

log = logging.getLogger("fabric.controller")

#: a joined host that was linked to the controller before this one started (a restart, or a
#: new leader taking over) links again by itself, waiting up to LinkOptions.reconnect_max
#: between attempts: it gets that long on top of host_failure_timeout before it is declared
#: dead, so the instances it runs are adopted, not healed elsewhere
RELINK_GRACE = LinkOptions().reconnect_max

INTERRUPTED = "the fabric restarted while this operation ran; check the deployment and run it again"
#: operations whose work a restart resumes (the deployment's goal and stored step say how)
RESUMABLE = frozenset(
    {
        "CreateDeployment",
        "UpgradeDeployment",
        "ChangeDeploymentConfiguration",
        "UpdateDeploymentStatus",
        "DeleteDeployment",
        "RecoverDeployment",
    }
)


async def recover(
    state: ControllerState, ops: Operations, upgrades: Upgrades, spawn: Callable[..., None]
) -> int:
    """Load the pool's goal state, reopen its ports, and start bringing deployments back in the
    background. Returns how many deployments were recovered."""
    store = state.store
    interrupted = {r.target: r for r in await store.interrupted() if r.kind in RESUMABLE}
    failed = await store.fail_interrupted(INTERRUPTED)
    if failed:
        log.warning(
            "%d operation(s) were cut short by a restart: %d resume with their deployment, the others read Failed",
            failed,
            len(interrupted),
        )
    for host in await store.hosts():
        added = state.hosts.add(host)
        if added.joined:  # it links again by itself, with backoff: adopt it rather than heal it
            added.last_seen += RELINK_GRACE
    recovered = []
    for rec in await store.deployments():
        folder = Path(rec.folder)
        generations: dict[int, Generation] = {}
        try:
            for g in await store.generations(rec.id):
                generations[g.number] = await load_generation(g, folder)
        except (ControllerError, OSError) as exc:
            log.error("deployment %s of %s cannot be recovered: %s", rec.name, rec.service, exc)
            continue
        if rec.generation not in generations:
            log.error(
                "deployment %s of %s lost generation %d; not recovered", rec.name, rec.service, rec.generation
            )
            continue
        dep = Deployment(
            id=rec.id,
            service=rec.service,
            slot=rec.slot,
            name=rec.name,
            label=rec.label,
            goal=rec.goal,
            generation=rec.generation,
            folder=folder,
            generations=generations,
            upgrade=rec.upgrade,
        )
        for r in await store.instances(rec.id):
            inst = Instance.from_record(r)
            if inst.generation not in generations:
                inst.generation = rec.generation
            if inst.host_id not in state.hosts.hosts:
                inst.host_id = ""  # its host was lost: the healer places it
            running = rec.goal == "Running"
            inst.status = "RoleStateUnknown" if running else "StoppedVM"
            inst.detail = "coming back after a fabric restart" if running else "the deployment is suspended"
            dep.instances[inst.vm] = inst
        if rec.goal != "Deleting":
            wanted = {(p.role, p.endpoint, p.instance): p for p in await store.public_ports(rec.id)}
            try:
                await state.rotation.open(dep, wanted)
            except ControllerError as exc:
                log.error("deployment %s: its public ports cannot be opened: %s", dep.name, exc.message)
        state.add(dep)
        await state.save_deployment(dep)
        recovered.append(dep)
    for inst in state.move_off_public_ports([i for d in recovered for i in d.instances.values()]):
        await state.save_instance(inst)
    for dep in recovered:
        await _resume(state, ops, upgrades, spawn, dep, interrupted.get(f"{dep.service}/{dep.slot}"))
    return len(recovered)


async def _adopt(state: ControllerState, record: OperationRecord | None) -> str | None:
    """Mark an interrupted operation InProgress again; returns its request id (None: none)."""
    if record is None:
        return None
    await state.store.put(record)
    log.info("operation %s (%s of %s) resumes", record.request_id, record.kind, record.target)
    return record.request_id


async def _resume(
    state: ControllerState,
    ops: Operations,
    upgrades: Upgrades,
    spawn: Callable[..., None],
    dep: Deployment,
    interrupted: OperationRecord | None,
) -> None:
    target = f"{dep.service}/{dep.slot}"
    if dep.goal == "Deleting":
        request_id = await _adopt(state, interrupted) or await ops.begin(
            "DeleteDeployment", target, "resumed after a fabric restart"
        )
        dep.busy = request_id
        spawn(partial(ops.run, request_id, dep, lambda: finish_delete(state, dep), phase="Deleting"))
        return
    if dep.goal != "Running":
        return

    async def bring_back() -> str:
        await start_all(state, dep, dep.ordered())
        upgrade = dep.upgrade
        if upgrade is not None and upgrade.mode != "Manual":
            return await upgrades.resume(dep)
        return f"{len(dep.instances)} instances started again"

    request_id = await _adopt(state, interrupted) or await ops.begin(
        "RecoverDeployment", target, "bringing the deployment back after a fabric restart"
    )
    dep.busy = request_id
    spawn(partial(ops.run, request_id, dep, bring_back, phase="RunningTransitioning"))
