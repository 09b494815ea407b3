"""The controller's view and control of its hosts: list them with their state, cordon,
uncordon, and drain (`fabric hosts`, `fabric host cordon|uncordon|drain`).

A cordoned host takes no new instance (placement sees it full); the mark is kept on its store
record, so it survives a restart. Draining cordons the host, then moves its instances away one
update domain at a time: those of a domain leave rotation and drain, stop, are placed elsewhere
and start there; the next domain goes only once they are Ready. A drain is refused, with nothing
changed, when the other hosts have no room for every instance (checked on a placement plan).

States: Ready; NotReady (running but not heard for two heartbeat intervals, not yet declared
dead); Cordoned; Dead (declared dead: silent for host_failure_timeout, or its process ended).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
import msgspec

from actors import Request
from fabric.cluster.node import memory_mb
from fabric.controller import lifecycle
from fabric.controller.commands import each_instance, ensure_idle
from fabric.controller.hosts import Host
from fabric.controller.messages import ControllerError, HostPage, HostState, HostView, OperationAccepted
from fabric.controller.model import Deployment, Instance
from fabric.controller.operations import Operations
from fabric.controller.placement import LOCALHOST, Planner, cores_of
from fabric.controller.state import ControllerState
from fabric.model.vmsizes import UnknownVmSizeError, vm_size

log = logging.getLogger("fabric.controller")

Spawn = Callable[..., None]

#: hosts one ListHosts answers at most
MAX_PAGE = 500
#: instance names one HostView lists at most (instance_count has them all)
MAX_LISTED = 64
#: a host name's length at most (a certificate name, or <pool>-host<n>)
MAX_NAME = 253


class ListHosts(Request[HostPage], frozen=True, tag=True, kw_only=True):
    """Answer a page of every host, local and joined."""

    offset: int = 0
    limit: int = 100


class CordonHost(Request[HostView], frozen=True, tag=True, kw_only=True):
    """Cordon a host (``cordon``) or uncordon it; answers its view."""

    name: str
    cordon: bool = True


class DrainHost(Request[OperationAccepted], frozen=True, tag=True, kw_only=True):
    """Cordon a host and move its instances away, one update domain at a time."""

    name: str


class RemoveHost(Request[None], frozen=True, tag=True, kw_only=True):
    """Forget a joined host that runs no instance (`fabric host remove`; the cluster API revokes
    its certificate first, so that it is not heard again); with ``check``, only whether it may."""

    name: str
    check: bool = False


def _bad(message: str) -> ControllerError:
    return ControllerError("BadRequest", message, 400)


def _conflict(message: str) -> ControllerError:
    return ControllerError("ConflictError", message, 409)


def _memory_of(dep: Deployment, inst: Instance) -> int:
    try:
        return vm_size(dep.generations[inst.generation].role(inst.role).vm_size).memory_mb
    except UnknownVmSizeError:
        return 0


class HostAdmin:
    """Answers the host requests of one controller."""

    def __init__(self, state: ControllerState, ops: Operations, spawn: Spawn) -> None:
        self.state = state
        self.ops = ops
        self.spawn = spawn
        #: host id -> the request id of the drain under way
        self.draining: dict[str, str] = {}
        self._machine_mb = memory_mb()

    async def handle(
        self, message: ListHosts | CordonHost | DrainHost | RemoveHost
    ) -> HostPage | HostView | OperationAccepted | None:
        """Answer one host request.

        Raises:
            ControllerError: 400 for a bad number or name, 404 for an unknown host, 409 for a
                host that cannot be changed now (nothing is changed then).
        """
        match message:
            case ListHosts(offset=offset, limit=limit):
                return await self.page(offset, limit)
            case CordonHost(name=name, cordon=cordon):
                return await self.cordon(name, cordon)
            case DrainHost(name=name):
                return await self.drain(name)
            case RemoveHost(name=name, check=check):
                await self.remove(name, check)
                return None
        raise TypeError(f"not a host request: {type(message).__name__}")

    # -- views -----------------------------------------------------------------------------------

    async def page(self, offset: int, limit: int) -> HostPage:
        """A page of every host of the pool (local and joined), by number."""
        if not 0 <= offset <= 10**9 or not 1 <= limit <= MAX_PAGE:
            raise _bad(f"offset must be 0 or more and limit 1 to {MAX_PAGE}")
        views = self.views()
        end = offset + limit
        return HostPage(
            hosts=views[offset:end], total=len(views), next_offset=end if end < len(views) else None
        )

    def views(self) -> list[HostView]:
        """Every host's view, by number."""
        on: dict[str, list[tuple[Deployment, Instance]]] = {}
        for dep, inst in self.state.instances():
            if inst.host_id:
                on.setdefault(inst.host_id, []).append((dep, inst))
        now = anyio.current_time()
        pool = sorted(self.state.hosts.hosts.values(), key=lambda h: h.record.number)
        return [self._view(h, on.get(h.id, []), now) for h in pool]

    def late_after(self) -> float:
        """Silence after which a running host shows NotReady (before it is declared dead)."""
        s = self.state.settings
        return min(2 * s.host_heartbeat_interval, s.host_failure_timeout / 2)

    def _view(self, host: Host, placed: list[tuple[Deployment, Instance]], now: float) -> HostView:
        running = host.ref is not None and host.alive
        age = now - host.last_seen if running else None
        state: HostState
        if not host.alive:
            state = "Dead"
        elif (
            (age is not None and age > self.late_after())
            or (host.joined and not running)
            or host.id in self.state.rotation.hosts_out
        ):
            state = "NotReady"  # heard late, a joined host not linked (yet), or its link dropped
        elif host.record.cordoned_at:
            state = "Cordoned"
        else:
            state = "Ready"
        used = sum(cores_of(dep.generations[i.generation].role(i.role)) for dep, i in placed)
        return HostView(
            name=host.id,
            pool=host.record.pool,
            kind="joined" if host.joined and not host.launched else "local",  # a replica's: local
            address=host.address if host.joined else LOCALHOST,
            cores=host.record.cores,
            cores_used=used,
            memory_mb=host.memory_mb if host.joined else self._machine_mb,
            memory_used_mb=sum(_memory_of(dep, i) for dep, i in placed),
            fault_domain=host.record.fault_domain,
            heartbeat_age=None if age is None else round(age, 3),
            state=state,
            cordoned=bool(host.record.cordoned_at),
            connected=running,
            pid=host.pid if running else 0,
            instance_count=len(placed),
            instances=sorted(i.vm for _, i in placed)[:MAX_LISTED],
        )

    def _host(self, name: str) -> Host:
        if not name or len(name) > MAX_NAME:
            raise _bad(f"a host name is 1 to {MAX_NAME} characters")
        host = self.state.hosts.hosts.get(name)
        if host is None:
            raise ControllerError(
                "ResourceNotFound",
                f"there is no host {name!r} in pool {self.state.pool}; see `fabric hosts`",
                404,
            )
        if not host.alive:
            raise _conflict(f"host {name} is dead; its instances were moved already")
        return host

    # -- cordon ----------------------------------------------------------------------------------

    async def cordon(self, name: str, on: bool) -> HostView:
        """Cordon (``on``) or uncordon a host, in the store first."""
        host = self._host(name)
        if not on and name in self.draining:
            raise _conflict(
                f"host {name} is being drained (operation {self.draining[name]}); wait for it to end"
            )
        await self._mark(host, on)
        if not on:
            self.state.wake_healer()  # instances waiting for capacity may fit there now
        return self._one(host)

    def _one(self, host: Host) -> HostView:
        placed = [(d, i) for d, i in self.state.instances() if i.host_id == host.id]
        return self._view(host, placed, anyio.current_time())

    async def _mark(self, host: Host, on: bool) -> None:
        if bool(host.record.cordoned_at) == on:
            return
        record = msgspec.structs.replace(host.record, cordoned_at=time.time() if on else 0.0)
        await self.state.store.put(record)
        host.record = record
        log.info("host %s is %s", host.id, "cordoned" if on else "uncordoned")
        self.state.notify()

    async def remove(self, name: str, check: bool = False) -> None:
        """Forget a joined host with no instance placed on it (dead or alive), in the store first
        (``check``: only whether it may be).

        Raises:
            ControllerError: 404 unknown, 409 a local host or one with instances (nothing changed).
        """
        if not name or len(name) > MAX_NAME:
            raise _bad(f"a host name is 1 to {MAX_NAME} characters")
        host = self.state.hosts.hosts.get(name)
        if host is None:
            raise ControllerError(
                "ResourceNotFound", f"there is no host {name!r} in pool {self.state.pool}", 404
            )
        if host.launched or not host.joined:
            raise _conflict(f"host {name} is a local host of the fabric: only a joined host is removed")
        placed = sum(1 for _, i in self.state.instances() if i.host_id == name)
        if placed or name in self.draining:
            raise _conflict(
                f"host {name} has {placed} instance(s) placed on it; move them first with `fabric host drain {name}`"
            )
        if check:
            return
        async with self.state.store.transaction() as tx:
            tx.delete_host(name)
        del self.state.hosts.hosts[name]
        host.alive = False
        log.info("host %s was removed", name)
        self.state.notify()

    # -- drain -----------------------------------------------------------------------------------

    async def drain(self, name: str) -> OperationAccepted:
        """Check there is room elsewhere for every instance of the host, cordon it, and move
        them in the background (an operation)."""
        host = self._host(name)
        if name in self.draining:
            raise _conflict(f"host {name} is being drained already (operation {self.draining[name]})")
        moving = [(d, i) for d, i in self.state.instances() if i.host_id == host.id]
        deps = list({d.id: d for d, _ in moving}.values())
        for dep in deps:
            ensure_idle(dep)
        self._check_room(host, moving)
        domains = sorted({i.update_domain for _, i in moving})
        # the cordon and the operation's record: one transaction (both land, or neither)
        cordoned = host.record.cordoned_at != 0
        record = host.record if cordoned else msgspec.structs.replace(host.record, cordoned_at=time.time())
        async with self.state.store.transaction() as tx:
            if not cordoned:
                tx.put(record)
            request_id = self.ops.record(
                tx,
                "DrainHost",
                f"host/{name}",
                f"cordoned; {len(moving)} instance(s) in {len(domains)} update domain(s) to move",
            )
        if not cordoned:
            host.record = record
            log.info("host %s is cordoned", host.id)
            self.state.notify()
        for dep in deps:
            dep.busy = request_id
        self.draining[name] = request_id
        self.spawn(self._run, request_id, host, deps)
        return OperationAccepted(request_id=request_id)

    def _check_room(self, host: Host, moving: list[tuple[Deployment, Instance]]) -> None:
        planner: Planner = self.state.planner()
        for slot in planner.hosts:
            if slot.id == host.id:
                slot.cordoned = True
        for dep, inst in sorted(moving, key=lambda m: m[1].update_domain):
            try:
                planner.place((dep.id, inst.role), cores_of(dep.generations[inst.generation].role(inst.role)))
            except ControllerError as exc:
                raise _conflict(
                    f"cannot drain host {host.id}: no other host has room for {inst.id} of {dep.name} "
                    f"({exc.message})"
                ) from None

    async def _run(self, request_id: str, host: Host, deps: list[Deployment]) -> None:
        try:
            await self.ops.run(request_id, None, lambda: self._move_all(request_id, host))
        finally:
            for dep in deps:
                if dep.busy == request_id:
                    dep.busy = None
            self.draining.pop(host.id, None)
            self.state.notify()

    async def _move_all(self, request_id: str, host: Host) -> str:
        domains = sorted({i.update_domain for _, i in self.state.instances() if i.host_id == host.id})
        moved = 0
        for n, domain in enumerate(domains, 1):
            group = [
                (d, i)
                for d, i in self.state.instances()
                if i.host_id == host.id and i.update_domain == domain
            ]
            names = ", ".join(i.id for _, i in group)
            await self.ops.progress(
                request_id,
                f"update domain {domain} ({n} of {len(domains)}): moving {names}; {moved} moved so far",
            )
            await self._move_domain(host, group)
            moved += len(group)
        return f"host {host.id} drained: {moved} instance(s) moved over {len(domains)} update domain(s); it stays cordoned"

    async def _move_domain(self, host: Host, group: list[tuple[Deployment, Instance]]) -> None:
        by_dep: dict[str, tuple[Deployment, list[Instance]]] = {}
        for dep, inst in group:
            by_dep.setdefault(dep.id, (dep, []))[1].append(inst)
        async with AsyncExitStack() as stack:
            for dep, insts in by_dep.values():
                await stack.enter_async_context(lifecycle.leaving_rotation(self.state, dep, insts))
            for dep, insts in by_dep.values():
                await each_instance(insts, lambda inst, dep=dep: self._move(host, dep, inst))  # type: ignore[misc]
            for dep, insts in by_dep.values():
                if dep.goal == "Running":
                    await lifecycle.wait_up(self.state, dep, insts, f"draining host {host.id}")

    async def _move(self, host: Host, dep: Deployment, inst: Instance) -> None:
        state = self.state
        await lifecycle.stop(state, dep, inst, delete_disk=True)
        async with inst.lock:
            if dep.instances.get(inst.vm) is not inst or inst.host_id != host.id:
                return  # deleted, or its host died and healing has it
            planner = state.planner()
            failure: ControllerError | None = None
            try:
                slot = planner.place(
                    (dep.id, inst.role), cores_of(dep.generations[inst.generation].role(inst.role))
                )
            except ControllerError as exc:
                failure = _conflict(f"no room left for {inst.id} off host {host.id}: {exc.message}")
            else:
                new_hosts = state.commit_hosts(planner)
                inst.host_id, inst.fault_domain = slot.id, slot.fault_domain
                async with state.store.transaction() as tx:
                    for record in new_hosts:
                        tx.put(record)
                    await state.write_instance(tx, inst)
        if failure is not None:
            if dep.goal == "Running":
                await lifecycle.start(state, dep, inst)  # back where it was: it is not lost
            raise failure
        log.info("drain: %s %s moves from host %s to %s", dep.name, inst.id, host.id, inst.host_id)
        state.events.record(
            "heal", f"{inst.id} moves from host {host.id} (draining) to {inst.host_id}", dep=dep, inst=inst
        )
        if dep.goal == "Running":
            await lifecycle.start(state, dep, inst)
        else:
            state.set_status(
                dep, inst, "StoppedVM", f"moved to host {inst.host_id}; the deployment is suspended"
            )
