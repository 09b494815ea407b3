"""Deployment commands: create, suspend and run, reboot/reimage/rebuild, delete, swap.

Each command is checked completely first (raising ControllerError with nothing changed), then
written to the store, then answered with OperationAccepted while its work runs in the
background. Upgrades and configuration changes live in upgrade.py.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from fabric.controller import lifecycle, shared_folder
from fabric.controller.events import record_operation
from fabric.controller.generations import load_generation, stage_package, write_config_off_loop
from fabric.controller.messages import (
    ControllerError,
    CreateDeployment,
    DeleteDeployment,
    DeploymentStatus,
    InstanceAction,
    OperationAccepted,
    SetDeploymentStatus,
    SwapDeployments,
)
from fabric.controller.model import Deployment, Instance, check_name, vm_name
from fabric.controller.operations import Operations
from fabric.controller.placement import PortAllocator, check_room, cores_of, update_domain
from fabric.controller.state import ControllerState, unchanged_on_failure
from fabric.controller.store import GenerationRecord, HostRecord
from fabric.host.messages import MAX_START_BATCH

log = logging.getLogger("fabric.controller")

Spawn = Callable[..., None]
SLOTS = ("production", "staging")


def conflict(message: str) -> ControllerError:
    """A 409 ConflictError."""
    return ControllerError("ConflictError", message, 409)


def ensure_idle(dep: Deployment, *, allow_upgrade: bool = False) -> None:
    """Refuse a change while another operation (or a Manual upgrade) has the deployment."""
    if dep.busy is not None:
        raise conflict(
            f"deployment {dep.name} is busy with operation {dep.busy}; wait for it to finish, then try again"
        )
    if dep.goal == "Deleting":
        raise conflict(f"deployment {dep.name} is being deleted")
    if dep.upgrade is not None and not allow_upgrade:
        raise conflict(
            f"deployment {dep.name} has a {dep.upgrade.mode} upgrade in progress; "
            f"walk update domain {dep.upgrade.next_domain} next (or wait for it to finish)"
        )


def check_slot(slot: str) -> None:
    """Refuse a slot other than production or staging."""
    if slot not in SLOTS:
        raise ControllerError("BadRequest", f"slot {slot!r} is not valid; use production or staging")


#: Instances one start drives at once: a task per instance of 20,000 held the loop 1.5 s to
#: create, then kept so many tasks runnable that the links' readers ran late (heartbeats read
#: late: hosts declared dead). A start holds its slot until its host answers StartGuest.
START_CONCURRENCY = 1000


async def start_all(state: ControllerState, dep: Deployment, insts: list[Instance]) -> None:
    """Start instances concurrently (START_CONCURRENCY hosts at once); raise the first failure
    once all were tried. A local host's instances go in one StartGuests (a round trip per host,
    not per instance: at 10,000 hosts the asks were a seventh of the controller's CPU); a joined
    host's one by one (each may need its package shipped first)."""
    units: list[list[Instance]] = []
    alone: list[Instance] = []
    for host_id, group in _by_host(insts).items():
        host = state.hosts.hosts.get(host_id)
        if host is None or host.joined or len(group) == 1:
            alone.extend(group)
        else:
            units.extend(group[at : at + MAX_START_BATCH] for at in range(0, len(group), MAX_START_BATCH))
    units.extend([inst] for inst in by_host_in_turn(alone))
    errors: list[ControllerError] = []
    todo = iter(units)

    async def worker() -> None:
        for unit in todo:  # shared: each worker takes the next host's instances when it is free
            if len(unit) > 1:
                errors.extend(await lifecycle.start_together(state, dep, unit))
                continue
            try:
                await lifecycle.start(state, dep, unit[0])
            except ControllerError as exc:
                errors.append(exc)

    # About START_CONCURRENCY instances in flight, however many a unit holds.
    workers = min(len(units), max(1, START_CONCURRENCY * len(units) // max(1, len(insts))))
    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    _raise_first(errors)


def _by_host(insts: list[Instance]) -> dict[str, list[Instance]]:
    by_host: dict[str, list[Instance]] = {}
    for inst in insts:
        by_host.setdefault(inst.host_id, []).append(inst)
    return by_host


def by_host_in_turn(insts: list[Instance]) -> list[Instance]:
    """``insts`` ordered one per host in turn (the first of each host, then the second...): the
    instances of one host start far apart, so only the first waits for the host to spin up (at
    10,000 hosts, the second waiting on its host's spawn lock was a tenth of the start's CPU)."""
    by_host = _by_host(insts)
    if len(by_host) < 2:
        return insts
    return [inst for turn in itertools.zip_longest(*by_host.values()) for inst in turn if inst is not None]


async def each_instance(
    insts: list[Instance], step: Callable[[Instance], Awaitable[None]], limit: int = 0
) -> None:
    """Run ``step`` on every instance concurrently (``limit`` at once; 0: all); raise the first
    ControllerError once all were tried (one failing instance does not stop the others)."""
    errors: list[ControllerError] = []
    todo = iter(insts)

    async def worker() -> None:
        for inst in todo:  # shared: each worker takes the next instance when it is free
            try:
                await step(inst)
            except ControllerError as exc:
                errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(min(len(insts), limit or len(insts))):
            tg.start_soon(worker)
    _raise_first(errors)


def _raise_first(errors: list[ControllerError]) -> None:
    """Raise the first of ``errors`` (saying how many more), if any."""
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ControllerError(errors[0].code, errors[0].message + more, errors[0].status)


class Commands:
    """Checks and runs the deployment commands of one controller."""

    def __init__(self, state: ControllerState, ops: Operations, spawn: Spawn) -> None:
        self.state = state
        self.ops = ops
        self.spawn = spawn

    async def accept(
        self,
        kind: str,
        dep: Deployment,
        work: Callable[[], Awaitable[str | None]],
        phase: DeploymentStatus | None = None,
        request_id: str | None = None,
    ) -> OperationAccepted:
        """Record the operation (unless ``request_id`` names the one recorded with the change),
        mark the deployment busy, and run ``work`` in the background."""
        if request_id is None:
            request_id = await self.ops.begin(kind, f"{dep.service}/{dep.slot}")
        dep.busy = request_id
        run = partial(self.ops.run, request_id, dep, work, phase=phase)
        self.spawn(partial(record_operation, self.state.events, self.ops, kind, request_id, dep, run))
        self.state.notify()
        return OperationAccepted(request_id=request_id)

    # -- create ---------------------------------------------------------------------------------

    async def create(self, cmd: CreateDeployment) -> OperationAccepted:
        """Check, stage, place and store a new deployment; start it in the background."""
        state = self.state
        check_name("hosted service", cmd.service)
        check_name("deployment", cmd.name)
        check_slot(cmd.slot)
        existing = state.find(cmd.service, cmd.slot)
        if existing is not None or (cmd.service, cmd.slot) in await state.store.other_pools_services():
            raise conflict(
                f"hosted service {cmd.service} already has a {cmd.slot} deployment; "
                "delete it, upgrade it, or deploy to the other slot"
            )
        if any(d.name == cmd.name for d in state.of_service(cmd.service)):
            raise conflict(
                f"hosted service {cmd.service} already has a deployment named {cmd.name}; choose another"
            )
        dep_id = uuid.uuid4().hex
        folder = state.state_dir / "deployments" / dep_id
        await anyio.to_thread.run_sync(_make_folder, folder)
        try:
            dep = await self._build(cmd, dep_id, folder)
            await state.rotation.open(dep)
            try:
                state.move_off_public_ports(dep.ordered())
                new_hosts = self.place(dep, dep.ordered())
            except BaseException:
                await state.rotation.close(dep.id)
                raise
        except BaseException:
            await anyio.to_thread.run_sync(shared_folder.remove, folder)
            raise
        try:
            async with state.store.transaction() as tx:
                for host in new_hosts:
                    tx.put(host)
                tx.put(dep.current.record)
                state.write_deployment(tx, dep)
                for inst in dep.instances.values():
                    await state.write_instance(tx, inst)
                request_id = self.ops.record(tx, "CreateDeployment", f"{dep.service}/{dep.slot}")
        except BaseException:  # not stored: not created (its ports and files go)
            await state.rotation.close(dep.id)
            await anyio.to_thread.run_sync(shared_folder.remove, folder)
            raise
        state.add(dep)
        log.info(
            "deployment %s (%s/%s) created with %d instances",
            dep.name,
            dep.service,
            dep.slot,
            len(dep.instances),
        )
        if not cmd.start:
            return await self.accept(
                "CreateDeployment", dep, _done("created suspended"), request_id=request_id
            )
        return await self.accept(
            "CreateDeployment", dep, lambda: self._start_new(dep), phase="Deploying", request_id=request_id
        )

    async def _build(self, cmd: CreateDeployment, dep_id: str, folder: Path) -> Deployment:
        config = await write_config_off_loop(folder, 1, cmd.configuration, cmd.configuration_name)
        limit = self.state.settings.max_instances
        pkg = str(await stage_package(cmd.package_path, folder, 1, config, cmd.configuration_name, limit))
        record = GenerationRecord(
            deployment_id=dep_id,
            number=1,
            packages={},
            main=pkg,
            configuration=cmd.configuration,
            configuration_name=cmd.configuration_name,
        )
        gen = await load_generation(record, folder, limit)
        dep = Deployment(
            id=dep_id,
            service=cmd.service,
            slot=cmd.slot,
            name=cmd.name,
            label=cmd.label or cmd.name,
            goal="Running" if cmd.start else "Suspended",
            generation=1,
            folder=folder,
            generations={1: gen},
        )
        ports = PortAllocator(self.state.taken_ports())
        udc = gen.definition.upgrade_domain_count
        demand = [(role, gen.instance_count(role.name)) for role in gen.definition.roles]
        # Numbers first: nothing is built for a plan over the limit or without room.
        check_room(
            self.state.planner(),
            ports,
            demand,
            total=sum(count for _, count in demand),
            max_instances=self.state.settings.max_instances,
        )
        roles = [role for role, count in demand for _ in range(count)]
        given = iter(await ports.instance_ports_off_loop(roles))
        for role, count in demand:
            for index in range(count):
                inst = Instance(
                    vm=vm_name(cmd.service, cmd.name, role.name, index),
                    deployment_id=dep_id,
                    role=role.name,
                    index=index,
                    ports=next(given),
                    update_domain=update_domain(index, udc),
                    generation=1,
                    status="RoleStateUnknown" if cmd.start else "StoppedVM",
                    detail="waiting for its host" if cmd.start else "the deployment is suspended",
                )
                dep.instances[inst.vm] = inst
        return dep

    def place(self, dep: Deployment, insts: list[Instance]) -> list[HostRecord]:
        """Place instances on hosts, all or none (synchronous, so no other placement interleaves).
        Returns the records of the hosts it spins up, for the caller to store with the instances.

        Raises:
            ControllerError: ConflictError when the pool has no room (nothing is placed).
        """
        planner = self.state.planner()
        chosen = []
        for inst in insts:
            if not inst.host_id:
                role = dep.generations[inst.generation].role(inst.role)
                chosen.append((inst, planner.place((dep.id, inst.role), cores_of(role))))
        new_hosts = self.state.commit_hosts(planner)
        for inst, slot in chosen:
            inst.host_id, inst.fault_domain = slot.id, slot.fault_domain
        return new_hosts

    async def _start_new(self, dep: Deployment) -> str:
        await start_all(self.state, dep, dep.ordered())
        return f"started {len(dep.instances)} instances"

    # -- suspend and run --------------------------------------------------------------------------

    async def set_status(self, cmd: SetDeploymentStatus) -> OperationAccepted:
        """Suspend (stop every VM, keep the deployment and its ports) or run it again."""
        state = self.state
        dep = state.get(cmd.service, cmd.slot)
        if cmd.status not in ("Running", "Suspended"):
            raise ControllerError(
                "BadRequest", f"status {cmd.status!r} is not valid; use Running or Suspended"
            )
        ensure_idle(dep)
        if dep.goal == cmd.status:
            return await self.accept("UpdateDeploymentStatus", dep, _done(f"already {cmd.status}"))
        with unchanged_on_failure(dep):
            dep.goal = cmd.status
            request_id = await self._save(dep, "UpdateDeploymentStatus")
        state.rotation.refresh(dep)
        insts = dep.ordered()
        if cmd.status == "Suspended":

            async def suspend() -> str:
                await lifecycle.drain(state, insts)  # out of rotation since the goal changed
                await each_instance(insts, lambda i: lifecycle.stop(state, dep, i))
                return f"stopped {len(insts)} instances"

            return await self.accept(
                "UpdateDeploymentStatus", dep, suspend, phase="SuspendedTransitioning", request_id=request_id
            )

        async def run() -> str:
            await start_all(state, dep, insts)
            return f"started {len(insts)} instances"

        return await self.accept(
            "UpdateDeploymentStatus", dep, run, phase="RunningTransitioning", request_id=request_id
        )

    async def _save(self, dep: Deployment, kind: str) -> str:
        """Store a deployment's goal with a new operation's record, in one transaction; returns
        the operation's request id."""
        async with self.state.store.transaction() as tx:
            self.state.write_deployment(tx, dep)
            return self.ops.record(tx, kind, f"{dep.service}/{dep.slot}")

    # -- one instance ------------------------------------------------------------------------------

    async def instance_action(self, cmd: InstanceAction) -> OperationAccepted:
        """Reboot (restart the guest OS), reimage (fresh disk) or rebuild (fresh disk and role
        drive, booted anew) one instance; the operation ends when it runs its role again."""
        state = self.state
        dep = state.get(cmd.service, cmd.slot)
        inst = dep.find(cmd.instance_id)
        if cmd.action not in ("reboot", "reimage", "rebuild"):
            raise ControllerError(
                "BadRequest", f"action {cmd.action!r} is not valid; use reboot, reimage or rebuild"
            )
        ensure_idle(dep, allow_upgrade=True)
        if dep.goal != "Running":
            raise conflict(f"deployment {dep.name} is suspended; run it before you {cmd.action} an instance")

        async def act() -> str:
            async with lifecycle.leaving_rotation(state, dep, [inst]):
                if cmd.action == "rebuild":
                    await lifecycle.stop(state, dep, inst, delete_disk=True)
                    await lifecycle.start(state, dep, inst)
                else:
                    await lifecycle.restart(state, dep, inst, reimage=cmd.action == "reimage")
                await lifecycle.wait_up(state, dep, [inst], f"{cmd.action} of {inst.id}")
            return f"{inst.id} {cmd.action} done; it is {inst.status}"

        kind = {
            "reboot": "RebootRoleInstance",
            "reimage": "ReimageRoleInstance",
            "rebuild": "RebuildRoleInstance",
        }
        return await self.accept(kind[cmd.action], dep, act)

    # -- delete ------------------------------------------------------------------------------------

    async def delete(self, cmd: DeleteDeployment) -> OperationAccepted:
        """Stop every instance, delete their disks and forget the deployment. A running
        operation (say an upgrade stuck on a failing role) is cancelled first."""
        state = self.state
        dep = state.get(cmd.service, cmd.slot)
        if dep.goal == "Deleting":
            raise conflict(f"deployment {dep.name} is already being deleted")
        with unchanged_on_failure(dep):
            dep.goal = "Deleting"
            request_id = await self._save(dep, "DeleteDeployment")
        if dep.cancel_scope is not None:  # stored: what runs now is cancelled
            dep.cancel_scope.cancel()
        dep.busy = None
        state.rotation.refresh(dep)
        return await self.accept(
            "DeleteDeployment",
            dep,
            lambda: finish_delete(state, dep),
            phase="Deleting",
            request_id=request_id,
        )

    # -- swap --------------------------------------------------------------------------------------

    async def swap(self, cmd: SwapDeployments) -> OperationAccepted:
        """VIP swap: production and staging exchange public ports (and slots)."""
        state = self.state
        deps = state.of_service(cmd.service)
        if not deps:
            raise ControllerError("ResourceNotFound", f"hosted service {cmd.service} has no deployments", 404)
        for dep in deps:
            ensure_idle(dep)
        if len(deps) == 2:
            problem = state.rotation.swap_problem(deps[0], deps[1])
            if problem:
                raise ControllerError("BadRequest", f"cannot swap: {problem}")
        for dep in deps:
            dep.busy = "swap"

        async def act() -> str:
            try:
                if len(deps) == 2:
                    await state.rotation.swap(deps[0], deps[1])
                else:  # the empty slot keeps its address: the deployment takes the other's
                    other = "staging" if deps[0].slot == "production" else "production"
                    await state.rotation.change_slot(deps[0], other)
                async with state.store.transaction() as tx:
                    for dep in deps:
                        dep.slot = "staging" if dep.slot == "production" else "production"
                        state.write_deployment(tx, dep)
            finally:
                for dep in deps[1:]:
                    dep.busy = None
            names = ", ".join(f"{d.name} is now {d.slot}" for d in deps)
            return f"swapped: {names}"

        return await self.accept("SwapDeployment", deps[0], act)


async def finish_delete(state: ControllerState, dep: Deployment) -> str:
    """Drain its instances (out of rotation since the goal changed), close the deployment's
    ports, stop and wipe its VMs, forget it (resumable)."""
    insts = dep.ordered()
    await lifecycle.drain(state, insts)
    await state.rotation.close(dep.id)

    async def wipe(inst: Instance) -> None:
        try:
            await lifecycle.stop(state, dep, inst, delete_disk=True)
        except ControllerError as exc:
            log.warning("deleting %s: %s", inst.id, exc.message)

    await each_instance(insts, wipe)
    await state.forget(dep)
    await anyio.to_thread.run_sync(shared_folder.remove, dep.folder)
    return f"deleted {dep.name} and its {len(insts)} instances"


def _make_folder(folder: Path) -> None:
    shared_folder.check("create the deployment folder")
    folder.mkdir(parents=True)


def _done(description: str) -> Callable[[], Awaitable[str]]:
    async def nothing() -> str:
        return description

    return nothing
