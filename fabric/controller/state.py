"""What one controller knows: its deployments, hosts and balancers, and the store behind them.

Every change of goal goes through here so the store and the live objects never disagree:
``save_*`` writes the record, and status reports land in ``on_status``, which keeps the load
balancers in step and wakes whoever waits for an instance to come up.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import anyio

from fabric.controller.events import EventLog
from fabric.controller.goal_store import GoalStore, Writes
from fabric.controller.hosts import HostPool
from fabric.controller.messages import ControllerError, Slot
from fabric.controller.model import Deployment, Instance, topology_changed
from fabric.controller.placement import Planner, PortAllocator, cores_of
from fabric.controller.rotation import Rotation
from fabric.controller.store import HostRecord
from fabric.guest.messages import InstanceStatus
from fabric.model.status import RoleStatus
from fabric.settings import Settings

log = logging.getLogger("fabric.controller")

#: statuses an instance passes through on its way to ReadyRole, logged at debug level
BOOT_STEPS: frozenset[str] = frozenset(
    {"RoleStateUnknown", "CreatingVM", "StartingVM", "CreatingRole", "StartingRole"}
)
#: a deployment of more instances logs the end of a routine boot (ReadyRole right after a
#: boot step) at debug level too: 20,000 such lines were the largest part of placing them
#: (the event log keeps every status; a ReadyRole after anything else stays at info)
QUIET_READY_ABOVE = 64
#: how long start counts may wait to be stored together (seconds; stop stores what waits)
FLUSH_INTERVAL = 0.5


@contextmanager
def unchanged_on_failure(dep: Deployment) -> Iterator[None]:
    """Put a deployment's goal, generation, label and upgrade back when the block raises: a
    change whose write did not land (the database away) is not half-applied in memory."""
    saved = (dep.goal, dep.generation, dep.label, dep.upgrade, dict(dep.generations))
    try:
        yield
    except BaseException:
        dep.goal, dep.generation, dep.label, dep.upgrade = saved[:4]
        dep.generations.clear()
        dep.generations.update(saved[4])
        raise


@contextmanager
def instances_unchanged_on_failure(state: ControllerState, dep: Deployment) -> Iterator[None]:
    """Put a deployment's instances back as they were when the block raises (a resize whose
    write did not land adds and removes none)."""
    saved = dict(dep.instances)
    try:
        yield
    except BaseException:
        for vm in dep.instances.keys() - saved.keys():
            state._by_vm.pop(vm, None)
        dep.instances.clear()
        dep.instances.update(saved)
        for vm, inst in saved.items():
            state._by_vm[vm] = (dep, inst)
        raise


def not_found(service: str, slot: str) -> ControllerError:
    """The error for a slot with no deployment."""
    return ControllerError(
        "ResourceNotFound", f"hosted service {service} has no deployment in the {slot} slot", 404
    )


class ControllerState:
    """The deployments of a pool, with the hosts, balancers and store that serve them."""

    def __init__(
        self,
        *,
        state_dir: Path,
        settings: Settings,
        pool: str,
        store: GoalStore,
        hosts: HostPool,
        rotation: Rotation,
    ) -> None:
        self.state_dir = state_dir
        self.settings = settings
        self.pool = pool
        self.store = store
        self.hosts = hosts
        self.rotation = rotation
        self.deployments: dict[str, Deployment] = {}
        #: the timeline of status changes, heals, upgrade steps, configuration changes and faults
        self.events = EventLog(settings.events_kept)
        #: when each VM's status was last reported by its host (anyio.current_time())
        self.vm_heard: dict[str, float] = {}
        self._by_vm: dict[str, tuple[Deployment, Instance]] = {}
        #: set at the next change (made only while a task waits for one)
        self._changed: anyio.Event | None = None
        #: instances whose role host start counts changed, stored together by flush_forever
        self._unsaved: dict[str, Instance] = {}
        self._unsaved_wake: anyio.Event | None = None
        #: called when instances lost their host (healing places them again)
        self.wake_healer: Callable[[], None] = lambda: None

    # -- lookups -------------------------------------------------------------------------------

    def get(self, service: str, slot: Slot) -> Deployment:
        """The deployment in a slot.

        Raises:
            ControllerError: ResourceNotFound.
        """
        dep = self.find(service, slot)
        if dep is None:
            raise not_found(service, slot)
        return dep

    def find(self, service: str, slot: str) -> Deployment | None:
        """The deployment in a slot, or None."""
        for dep in self.deployments.values():
            if dep.service == service and dep.slot == slot:
                return dep
        return None

    def of_service(self, service: str) -> list[Deployment]:
        """A hosted service's deployments."""
        return [d for d in self.deployments.values() if d.service == service]

    def instances(self) -> Iterator[tuple[Deployment, Instance]]:
        """Every instance of every deployment."""
        for dep in list(self.deployments.values()):
            for inst in list(dep.instances.values()):
                yield dep, inst

    def used_cores(self) -> dict[str, int]:
        """Cores taken on each host by the instances placed there."""
        used: Counter[str] = Counter()
        for dep, inst in self.instances():
            if inst.host_id:
                used[inst.host_id] += cores_of(dep.generations[inst.generation].role(inst.role))
        return dict(used)

    def taken_ports(self) -> set[int]:
        """Local and public ports the pool has given out."""
        taken: set[int] = set()
        for _, inst in self.instances():
            taken.update(inst.ports.values())
        for dep in self.deployments.values():
            taken.update(r.port for r in self.rotation.records(dep.id))
        return taken

    def move_off_public_ports(self, insts: list[Instance]) -> list[Instance]:
        """Give a new local port to any endpoint of ``insts`` whose port a load balancer took
        (a public port falling on the next free one can land on a stopped instance's port).
        Returns the instances that changed (the caller stores them)."""
        public = {r.port for dep in self.deployments.values() for r in self.rotation.records(dep.id)}
        public.update(r.port for inst in insts for r in self.rotation.records(inst.deployment_id))
        ports = PortAllocator(self.taken_ports() | public | {p for i in insts for p in i.ports.values()})
        changed = []
        for inst in insts:
            for name, port in sorted(inst.ports.items()):
                if port in public:
                    inst.ports[name] = ports.any_free()
                    topology_changed()
                    log.warning(
                        "%s: endpoint %s moves from port %d (now public) to %d",
                        inst.id,
                        name,
                        port,
                        inst.ports[name],
                    )
                    changed.append(inst)
        return changed

    def planner(self) -> Planner:
        """A placement plan over the live hosts as they stand."""
        spread: dict[tuple[str, str], Counter[int]] = {}
        for dep, inst in self.instances():
            if inst.host_id:
                spread.setdefault((dep.id, inst.role), Counter())[inst.fault_domain] += 1
        return Planner(
            hosts=self.hosts.slots(self.used_cores()),
            pool=self.pool,
            max_hosts=self.settings.max_hosts,
            host_cores=self.settings.host_cores,
            next_number=self.hosts.next_number,
            spread=spread,
        )

    def commit_hosts(self, planner: Planner) -> list[HostRecord]:
        """Register the hosts a plan spins up (they start on first use). Returns their records:
        the caller stores them with what it placed on them, before acting."""
        records = []
        for slot in planner.new_hosts():
            if slot.id in self.hosts.hosts:
                continue
            record = HostRecord(
                id=slot.id,
                pool=self.pool,
                number=slot.number,
                cores=slot.cores,
                fault_domain=slot.fault_domain,
            )
            self.hosts.add(record)
            records.append(record)
        return records

    # -- goal state ----------------------------------------------------------------------------

    def add(self, dep: Deployment) -> None:
        """Start tracking a deployment (already stored)."""
        self.deployments[dep.id] = dep
        for inst in dep.instances.values():
            self._by_vm[inst.vm] = (dep, inst)

    async def add_instance(self, dep: Deployment, inst: Instance, tx: Writes) -> None:
        """Track a new instance and store it with ``tx``."""
        dep.instances[inst.vm] = inst
        self._by_vm[inst.vm] = (dep, inst)
        await self.write_instance(tx, inst)

    def remove_instance(self, dep: Deployment, inst: Instance, tx: Writes) -> None:
        """Forget an instance (in the store with ``tx``)."""
        dep.instances.pop(inst.vm, None)
        self._by_vm.pop(inst.vm, None)
        tx.delete_instance(inst.vm)

    async def forget(self, dep: Deployment) -> None:
        """Forget a deployment (store included)."""
        await self.store.delete_deployment(dep.id)
        self.deployments.pop(dep.id, None)
        for vm in list(dep.instances):
            self._by_vm.pop(vm, None)

    def write_deployment(self, tx: Writes, dep: Deployment) -> None:
        """Write a deployment's goal and the ports it holds into ``tx``."""
        tx.put(dep.record(self.pool))
        for port in self.rotation.records(dep.id):
            tx.put(port)

    async def save_deployment(self, dep: Deployment) -> None:
        """Store a deployment's goal and the ports it holds."""
        async with self.store.transaction() as tx:
            self.write_deployment(tx, dep)

    async def write_instance(self, tx: Writes, inst: Instance) -> None:
        """Write an instance's placement, generation and VM account into ``tx``. The account
        (a uid) is chosen by the host that runs the VM, on its machine (fabric.host.accounts),
        and reported with its statuses (``on_status``); the stored one is proposed to the
        next host, which keeps it when it is free there."""
        tx.put(inst.record())

    async def save_instance(self, inst: Instance) -> None:
        """Store an instance's placement and generation (see write_instance)."""
        async with self.store.transaction() as tx:
            await self.write_instance(tx, inst)

    def save_soon(self, inst: Instance) -> None:
        """Store an instance's record shortly, in one transaction with the others changed
        meanwhile (``flush_forever``): at scale, one transaction per role host start was the
        store's largest cost."""
        self._unsaved[inst.vm] = inst
        if self._unsaved_wake is not None:
            self._unsaved_wake.set()

    async def flush(self) -> None:
        """Store the instances ``save_soon`` was given (those still tracked)."""
        while self._unsaved:
            batch, self._unsaved = self._unsaved, {}
            async with self.store.transaction() as tx:
                for vm, inst in batch.items():
                    if self._by_vm.get(vm, (None, None))[1] is inst:
                        await self.write_instance(tx, inst)

    async def flush_forever(self) -> None:
        """Run ``flush`` whenever ``save_soon`` was called, FLUSH_INTERVAL apart at least (a
        background task): starting 20,000 instances wrote a transaction for every few before."""
        while True:
            await self.flush()
            self._unsaved_wake = anyio.Event()
            if not self._unsaved:
                await self._unsaved_wake.wait()
            self._unsaved_wake = None
            await anyio.sleep(FLUSH_INTERVAL)  # what comes meanwhile goes in the same one

    # -- status --------------------------------------------------------------------------------

    def heartbeat_quiet(self, host_id: str, instances: Mapping[str, InstanceStatus]) -> bool:
        """Whether a host's heartbeat says nothing new (each VM it runs for this controller as
        known, no role host start uncounted), noting its VMs as heard. No task switch and
        O(the host's VMs): at 10,000 hosts the controller hears 4,000 heartbeats a second, and
        handling each VM's status as a report of its own was most of its work while placing."""
        now = self.hosts.now()
        by_vm, heard = self._by_vm, self.vm_heard
        quiet = True
        for vm, st in instances.items():
            found = by_vm.get(vm)
            if found is None or found[1].host_id != host_id:
                continue  # on_status ignores it too
            inst = found[1]
            heard[vm] = now
            changed = st.status != inst.status or st.detail != inst.detail
            if changed or (st.boot and (st.boot != inst.boot or st.starts > inst.boot_starts)):
                quiet = False
        return quiet

    async def on_status(self, host_id: str, vm: str, status: InstanceStatus, uid: int = 0) -> None:
        """A host reported an instance's status (and the uid it runs as there): record it and
        update rotation at once."""
        found = self._by_vm.get(vm)
        if found is None:
            return
        dep, inst = found
        if inst.host_id != host_id:
            return  # from a host the instance has left (healed elsewhere)
        self.vm_heard[vm] = self.hosts.now()
        if uid and uid != inst.uid:  # once a VM start: stored at once (a restart proposes it)
            log.info("%s %s: runs as uid %d on host %s", dep.name, inst.id, uid, host_id)
            old, inst.uid = inst.uid, uid
            try:
                await self.save_instance(inst)
            except BaseException:
                inst.uid = old  # the next report tries again
                raise
        # A status the host made itself (no boot) says nothing of role host starts.
        restarted = bool(status.boot) and inst.count_starts(status.boot, status.starts)
        if restarted:
            self.save_soon(inst)  # the count survives a restart of the fabric
        if not restarted and (status.status, status.detail) == (inst.status, inst.detail):
            return
        self.set_status(dep, inst, status.status, status.detail, restarted=restarted)

    def set_status(
        self,
        dep: Deployment,
        inst: Instance,
        status: RoleStatus,
        detail: str = "",
        *,
        restarted: bool = False,
    ) -> None:
        """Change an instance's status (the controller's own knowledge, or a host's report)."""
        if inst.cycle_pending and status not in ("ReadyRole", "BusyRole"):
            inst.cycle_pending = False
        was_rotating = inst.status
        inst.status, inst.detail = status, detail
        if restarted and inst.role_restarts:
            self.events.record(
                "heal", f"{inst.id}: role host restarted ({inst.role_restarts} so far)", dep=dep, inst=inst
            )
        if was_rotating != status:
            # The steps of a boot are routine (debug; the event log keeps every status): at
            # scale they were a log line per instance and step, the controller's largest cost.
            routine = status in BOOT_STEPS or (
                status == "ReadyRole"
                and was_rotating in BOOT_STEPS
                and was_rotating != "RoleStateUnknown"
                and len(dep.instances) > QUIET_READY_ABOVE
            )
            level = logging.DEBUG if routine else logging.INFO
            if log.isEnabledFor(level):
                log.log(level, "%s %s: %s%s", dep.name, inst.id, status, f" ({detail})" if detail else "")
            self.events.record(
                "status",
                f"{inst.id} is {status}" + (f" ({detail})" if detail else ""),
                dep=dep,
                inst=inst,
                status=status,
            )
        self.rotation.refresh_instance(dep, inst)
        self.notify()

    def notify(self) -> None:
        """Wake every task waiting for a change."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def changed(self) -> None:
        """Wait for the next change of any instance or deployment."""
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()
