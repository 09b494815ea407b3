"""One instance's life on its host: start, stop, restart, apply a change, wait until it is up,
and service healing when its host dies.

Each step holds the instance's lock, so an upgrade, a reboot and healing never drive the same
VM at once. A host that is gone raises nothing here: the instance loses its host and the
healer starts it elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio

from actors import ActorError, AskTimeout
from fabric.controller.host_ports import choose_ports
from fabric.controller.hosts import Host, HostStartFailed, HostUnavailable
from fabric.controller.messages import ControllerError
from fabric.controller.model import Deployment, Instance
from fabric.controller.placement import cores_of
from fabric.controller.state import ControllerState
from fabric.guest.messages import ApplyEnvironment
from fabric.host.agent import UnknownInstance
from fabric.host.messages import ApplyGuestEnvironment, RestartGuest, StartGuest, StartGuests, StopGuest
from roles.protocol import Change

log = logging.getLogger("fabric.controller")

#: Runs a coroutine function in the background (the controller actor's start_soon).
Spawn = Callable[..., None]
#: wait_up over more instances than this looks at them at most every COALESCE_SECONDS
COALESCE_ABOVE = 64
COALESCE_SECONDS = 0.05
#: A VM's first process may take this long to start (the actor runtime's start timeout, twice).
START_TIMEOUT = 120.0


def slow_timeout(state: ControllerState) -> float:
    """How long a host may take to stop, restart or reconfigure a guest (OnStop included)."""
    s = state.settings
    return s.on_stop_timeout + 4 * s.process_stop_timeout + START_TIMEOUT


def _refused(inst: Instance, what: str, exc: BaseException) -> ControllerError:
    message = exc.message if isinstance(exc, ActorError) else str(exc)
    return ControllerError("InternalError", f"{what} {inst.id} failed: {message}", 500)


async def drain(state: ControllerState, insts: list[Instance]) -> None:
    """Wait until the load balancers' open connections to ``insts`` (already out of rotation)
    end, up to drain_timeout; reset those that outlive it. Runs in the operation's own task:
    the controller's mailbox goes on meanwhile."""
    if not insts:
        return
    cut = await state.rotation.drain({i.vm for i in insts}, state.settings.drain_timeout)
    if cut:
        log.warning(
            "%s: %d connection(s) still open after the %g s drain timeout were reset",
            ", ".join(i.id for i in insts),
            cut,
            state.settings.drain_timeout,
        )


@asynccontextmanager
async def leaving_rotation(
    state: ControllerState, dep: Deployment, insts: list[Instance]
) -> AsyncIterator[None]:
    """Take ``insts`` out of rotation and drain them (see ``drain``) before the body stops or
    restarts them; they are back in rotation (as their status says) when it ends."""
    for inst in insts:
        inst.held_out = True
    state.rotation.refresh(dep)
    try:
        await drain(state, insts)
        yield
    finally:
        for inst in insts:
            inst.held_out = False
        state.rotation.refresh(dep)


async def start(state: ControllerState, dep: Deployment, inst: Instance) -> None:
    """Boot the instance's VM on its host (a VM already running there is left alone).

    Raises:
        ControllerError: the host refused (the VM could not boot).
    """
    async with inst.lock:
        if not inst.host_id or dep.instances.get(inst.vm) is not inst:
            return
        state.set_status(dep, inst, "RoleStateUnknown", f"starting on host {inst.host_id}")
        await _start_locked(state, dep, inst)


async def stop(state: ControllerState, dep: Deployment, inst: Instance, *, delete_disk: bool = False) -> None:
    """Stop the VM gracefully (the role's OnStop runs); with ``delete_disk`` its folder goes too."""
    async with inst.lock:
        if inst.host_id:
            try:
                await state.hosts.ask(
                    inst.host_id, StopGuest(instance_id=inst.vm, delete_disk=delete_disk), slow_timeout(state)
                )
            except HostUnavailable:
                pass
            except (ActorError, AskTimeout) as exc:
                raise _refused(inst, "stopping", exc) from None
        if dep.instances.get(inst.vm) is inst:
            state.set_status(dep, inst, "StoppedVM", "stopped")


async def restart(
    state: ControllerState,
    dep: Deployment,
    inst: Instance,
    *,
    reimage: bool = False,
    new_config: bool = False,
) -> None:
    """Restart the guest OS (a reboot), with a fresh disk when ``reimage``; ``new_config``
    boots it with its current generation's configuration (an upgrade)."""
    async with inst.lock:
        if not inst.host_id:
            return
        if new_config:
            try:
                await choose_ports(state, dep, inst, inst.generation)
            except HostUnavailable:
                return
        config = dep.guest_config(inst, state.state_dir, state.settings) if new_config else None
        inst.cycle_pending = True
        try:
            await state.hosts.ask(
                inst.host_id,
                RestartGuest(instance_id=inst.vm, reimage=reimage, config=config),
                slow_timeout(state),
            )
        except HostUnavailable:
            return
        except (ActorError, AskTimeout) as exc:
            if _unknown_to_host(exc):
                # The host lost the VM (it was never booted, or was stopped): boot it afresh.
                inst.cycle_pending = False
                await _start_locked(state, dep, inst)
                return
            inst.cycle_pending = False
            raise _refused(inst, "restarting", exc) from None


async def _start_locked(state: ControllerState, dep: Deployment, inst: Instance) -> None:
    try:
        await choose_ports(state, dep, inst, inst.generation)
        config = dep.guest_config(inst, state.state_dir, state.settings)
        await state.hosts.ask(inst.host_id, StartGuest(config), START_TIMEOUT)
    except HostStartFailed as exc:
        state.set_status(dep, inst, "FailedStartingVM", str(exc))
        raise ControllerError("InternalError", f"starting {inst.id} failed: {exc}", 500) from None
    except HostUnavailable:
        return  # the healer starts it elsewhere
    except (ActorError, AskTimeout) as exc:
        raise _refused(inst, "starting", exc) from None


async def start_together(
    state: ControllerState, dep: Deployment, insts: list[Instance]
) -> list[ControllerError]:
    """``start`` for instances placed on one local host, with one StartGuests for them all (one
    round trip instead of one each); returns the errors ``start`` would have raised, one per
    instance that failed (the others boot all the same)."""
    async with AsyncExitStack() as held:
        for inst in sorted(insts, key=lambda i: i.vm):  # one order: no two starts deadlock
            await held.enter_async_context(inst.lock)
        host_id = insts[0].host_id
        todo = [i for i in insts if i.host_id == host_id and dep.instances.get(i.vm) is i]
        if not host_id or not todo:
            return []
        try:
            for inst in todo:
                state.set_status(dep, inst, "RoleStateUnknown", f"starting on host {host_id}")
                await choose_ports(state, dep, inst, inst.generation)
        except HostUnavailable:
            return []
        configs = [dep.guest_config(inst, state.state_dir, state.settings) for inst in todo]
        try:
            answer = await state.hosts.ask(host_id, StartGuests(configs), START_TIMEOUT)
        except HostStartFailed as exc:
            errors = []
            for inst in todo:
                state.set_status(dep, inst, "FailedStartingVM", str(exc))
                errors.append(ControllerError("InternalError", f"starting {inst.id} failed: {exc}", 500))
            return errors
        except HostUnavailable:
            return []  # the healer starts them elsewhere
        except (ActorError, AskTimeout) as exc:
            return [_refused(inst, "starting", exc) for inst in todo]
        return [
            _refused(inst, "starting", ActorError(outcome.error_type, outcome.error))
            for inst, outcome in zip(todo, answer.outcomes, strict=True)
            if outcome.error_type
        ]


def _unknown_to_host(exc: BaseException) -> bool:
    return isinstance(exc, ActorError) and exc.caused_by(UnknownInstance) is not None


async def apply(
    state: ControllerState, dep: Deployment, inst: Instance, changes: list[Change], generation: int
) -> str:
    """Tell one instance of a configuration or topology change (RoleEnvironment changing and
    changed) and move it to ``generation``. Returns the guest's answer: "applied", "recycling",
    or "rebooted" when the role was not running and the VM was restarted with the change."""
    async with inst.lock:
        if dep.instances.get(inst.vm) is not inst:
            return "gone"
        env = dep.guest_config(inst, state.state_dir, state.settings, generation=generation).environment
        inst.generation = generation
        await state.save_instance(inst)
        if not inst.host_id or dep.goal != "Running":
            return "deferred"  # it boots with the new environment when it starts
        # A recycle shows as a non-Ready status, possibly before the answer: arm first.
        inst.cycle_pending = inst.status in ("ReadyRole", "BusyRole")
        change = ApplyGuestEnvironment(
            instance_id=inst.vm, change=ApplyEnvironment(environment=env, changes=changes)
        )
        try:
            answer = await state.hosts.ask(inst.host_id, change, slow_timeout(state))
        except HostUnavailable:
            inst.cycle_pending = False
            return "healing"
        except (ActorError, AskTimeout) as exc:
            log.warning("%s: could not apply the change (%s); rebooting it with the change", inst.id, exc)
            inst.cycle_pending = False
        else:
            if answer != "recycling":
                inst.cycle_pending = False
            return str(answer)
    async with leaving_rotation(state, dep, [inst]):
        await restart(state, dep, inst, new_config=True)
    return "rebooted"


async def wait_up(state: ControllerState, dep: Deployment, insts: list[Instance], what: str) -> None:
    """Wait until every instance still in the deployment runs its role (Ready or Busy).

    Raises:
        ControllerError: InternalError when one failed (FailedStartingRole, CyclingRole...).
    """
    while True:
        live = [i for i in insts if dep.instances.get(i.vm) is i]
        failed = [i for i in live if i.failed]
        if failed:
            i = failed[0]
            raise ControllerError(
                "InternalError",
                f"{what}: instance {i.id} is {i.status}"
                + (f" ({i.detail})" if i.detail else "")
                + "; fix the role and try again",
                500,
            )
        if all(i.up for i in live) or dep.goal == "Deleting":
            return
        await state.changed()
        if len(insts) > COALESCE_ABOVE:
            # Many wait: look again once the changes of a moment are in, not at each one (each
            # look is O(instances): an upgrade domain of 4,000 looked 28,000 times).
            await anyio.sleep(COALESCE_SECONDS)


# -- service healing ------------------------------------------------------------------------------


async def on_host_dead(state: ControllerState, dead: list[tuple[Host, str]]) -> None:
    """Hosts died (``(host, why)``, declared together): their instances lose their host in one
    pass over the instances and one transaction, and the healer places them again."""
    why_of = {host.id: why for host, why in dead}
    moved = [(dep, inst, inst.host_id) for dep, inst in state.instances() if inst.host_id in why_of]
    for _, inst, _ in moved:
        inst.host_id = ""
    async with state.store.transaction() as tx:
        for host_id in why_of:
            tx.delete_host(host_id)
        for _, inst, _ in moved:
            await state.write_instance(tx, inst)
    for host_id, why in why_of.items():
        state.events.record("heal", f"host {host_id} failed ({why}); its instances move", host=host_id)
    for dep, inst, host_id in moved:
        why = why_of[host_id]
        state.set_status(
            dep, inst, "RoleStateUnknown", f"host {host_id} failed ({why}); moving it to another host"
        )
    state.wake_healer()


async def heal_once(state: ControllerState, spawn: Spawn) -> None:
    """Place every instance that has no host (one plan and one transaction for them all);
    start those of running deployments.

    ``spawn(func, *args)`` runs a start in the background (the actor's start_soon).
    """
    waiting = [(dep, inst) for dep, inst in state.instances() if not inst.host_id and dep.goal != "Deleting"]
    if not waiting:
        return
    planner = state.planner()
    placed = []
    for dep, inst in waiting:
        try:
            slot = planner.place(
                (dep.id, inst.role), cores_of(dep.generations[inst.generation].role(inst.role))
            )
        except ControllerError as exc:
            if "waiting for capacity" not in inst.detail:
                state.set_status(dep, inst, "RoleStateUnknown", f"waiting for capacity: {exc.message}")
            continue
        placed.append((dep, inst, slot))
    new_hosts = state.commit_hosts(planner)
    for _, inst, slot in placed:
        inst.host_id, inst.fault_domain = slot.id, slot.fault_domain
    async with state.store.transaction() as tx:
        for host in new_hosts:
            tx.put(host)
        for _, inst, _ in placed:
            await state.write_instance(tx, inst)
    for dep, inst, slot in placed:
        if dep.instances.get(inst.vm) is not inst:
            continue  # removed while the write ran
        log.info("healing: %s %s goes to host %s", dep.name, inst.id, slot.id)
        state.events.record("heal", f"{inst.id} is placed on host {slot.id}", dep=dep, inst=inst)
        if dep.goal == "Running":
            spawn(_start_quietly, state, dep, inst)
        else:
            state.set_status(dep, inst, "StoppedVM", f"placed on host {slot.id}; the deployment is suspended")


async def _start_quietly(state: ControllerState, dep: Deployment, inst: Instance) -> None:
    try:
        await start(state, dep, inst)
    except ControllerError as exc:
        log.error("healing %s: %s", inst.id, exc.message)


async def heal_forever(state: ControllerState, spawn: Spawn) -> None:
    """Heal now and whenever woken, and every host_heartbeat_interval (capacity may free)."""
    while True:
        wakeup = anyio.Event()
        state.wake_healer = wakeup.set
        await heal_once(state, spawn)
        with anyio.move_on_after(max(0.05, state.settings.host_heartbeat_interval)):
            await wakeup.wait()
