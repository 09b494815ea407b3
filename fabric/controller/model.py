"""The controller's live picture of a deployment: generations, instances and their views.

Records in the store are the goal; these objects add what only a running controller knows
(each instance's last status, locks, what an operation is doing) and build the GuestConfig
and RoleEnvironment topology of an instance from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from fabric.controller.messages import (
    ControllerError,
    DeploymentStatus,
    DeploymentSummary,
    DeploymentView,
    InstanceView,
    PublicEndpoint,
    Slot,
)
from fabric.controller.store import (
    DeploymentGoal,
    DeploymentRecord,
    GenerationRecord,
    InstanceRecord,
    UpgradeRecord,
)
from fabric.guest.account import proposed_uid
from fabric.guest.instance import build_guest_config, instance_endpoints, instance_id
from fabric.guest.messages import GuestConfig
from fabric.model.definition import RoleDefinition, ServiceDefinition
from fabric.model.service import Service
from fabric.model.status import RoleStatus
from fabric.settings import Settings
from roles.protocol import InstanceInfo

#: the address of the instances of local hosts
LOCALHOST = "127.0.0.1"

#: Names a user gives (hosted services, deployments) become folder names: keep them plain.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
#: Statuses after which an instance will not come up by itself.
FAILED: frozenset[RoleStatus] = frozenset({"FailedStartingRole", "FailedStartingVM", "CyclingRole"})
#: Statuses of an instance that runs its role.
UP: frozenset[RoleStatus] = frozenset({"ReadyRole", "BusyRole"})


def check_name(what: str, name: str) -> None:
    """Refuse a service or deployment name that cannot be a folder name."""
    if not NAME_RE.fullmatch(name):
        raise ControllerError(
            "BadRequest",
            f"{what} name {name!r} is not valid; use 1-100 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit",
        )


def vm_name(service: str, deployment: str, role: str, index: int) -> str:
    """The VM of an instance: unique in the pool, so two deployments never share a VM folder."""
    return f"{service}.{deployment}.{instance_id(role, index)}"


@dataclass
class Generation:
    """A package (per role) and a configuration, loaded."""

    record: GenerationRecord
    #: role -> the service loaded from that role's package with this configuration
    services: dict[str, Service]
    #: the service whose definition governs deployment-wide things (domains, probes)
    main: Service

    @property
    def number(self) -> int:
        """The generation number."""
        return self.record.number

    @property
    def definition(self) -> ServiceDefinition:
        """The governing service definition."""
        return self.main.definition

    def package_of(self, role: str) -> str:
        """The extracted package folder a role's instances run."""
        return self.record.packages.get(role, self.record.main)

    def role(self, name: str) -> RoleDefinition:
        """A role's definition, from the package that role runs."""
        return self.services[name].definition.role(name)

    def instance_count(self, role: str) -> int:
        """How many instances the configuration asks for."""
        return self.main.configuration.role(role).instances

    def settings_of(self, role: str) -> dict[str, str]:
        """A role's setting values."""
        return self.main.configuration.role(role).setting_values()

    def certificates_of(self, role: str) -> dict[str, str]:
        """A role's certificate thumbprints."""
        return {c.name: c.thumbprint for c in self.main.configuration.role(role).certificates}


#: The fields of an Instance that RoleEnvironment's topology shows (see Deployment.topology).
TOPOLOGY_FIELDS = frozenset(
    {"role", "index", "ports", "address", "update_domain", "fault_domain", "generation"}
)


class _TopologyEpoch:
    """Counts changes to any instance's topology fields, in any deployment: a deployment's
    topology is rebuilt only when this moved (or its instances or generations did)."""

    value = 0


def topology_changed() -> None:
    """Note a change the epoch cannot see (an instance's ports dict changed in place)."""
    _TopologyEpoch.value += 1


@dataclass(eq=False)
class Instance:
    """A role instance: its goal (the record) and its last known status."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in TOPOLOGY_FIELDS:
            _TopologyEpoch.value += 1
        object.__setattr__(self, name, value)

    vm: str
    deployment_id: str
    role: str
    index: int
    host_id: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    #: the address its ports are on: a joined host's ("" on a local host: 127.0.0.1)
    address: str = ""
    update_domain: int = 0
    fault_domain: int = 0
    generation: int = 1
    #: the VM's own account (see fabric.guest.account); 0 until the store gives it one
    uid: int = 0
    status: RoleStatus = "RoleStateUnknown"
    detail: str = ""
    #: role host starts ever (kept in the store), and the VM boot whose starts were counted last
    role_starts: int = 0
    boot: str = ""
    boot_starts: int = 0
    #: a restart was asked: a Ready seen before the instance went down is not the new one
    cycle_pending: bool = False
    #: out of rotation on purpose (its update domain is upgrading)
    held_out: bool = False
    #: taken without a checkpoint when free (every start of 20,000 instances takes it once)
    lock: anyio.Lock = field(default_factory=lambda: anyio.Lock(fast_acquire=True))

    @property
    def id(self) -> str:
        """Azure's instance id, ``<Role>_IN_<n>``."""
        return instance_id(self.role, self.index)

    @property
    def role_restarts(self) -> int:
        """Every role host start after the first, for any reason: a crash, a recycle, a reboot,
        a reimage, an upgrade, the watchdog restarting the VM, a move to another host."""
        return max(0, self.role_starts - 1)

    def count_starts(self, boot: str, starts: int) -> bool:
        """Count the role host starts a VM reports: ``starts`` so far in its boot ``boot`` (each
        bootstrapper start is a new boot, counting from 0). Returns whether the count grew."""
        if boot != self.boot:
            self.boot, self.boot_starts = boot, 0
        if starts <= self.boot_starts:
            return False
        self.role_starts += starts - self.boot_starts
        self.boot_starts = starts
        return True

    @property
    def up(self) -> bool:
        """Whether the role runs (Ready or Busy) since the last restart asked of it."""
        return not self.cycle_pending and self.status in UP

    @property
    def failed(self) -> bool:
        """Whether it will not come up by itself."""
        return not self.cycle_pending and self.status in FAILED

    def record(self) -> InstanceRecord:
        """The goal part, for the store."""
        return InstanceRecord(
            vm=self.vm,
            deployment_id=self.deployment_id,
            role=self.role,
            index=self.index,
            host_id=self.host_id,
            ports=dict(self.ports),
            update_domain=self.update_domain,
            fault_domain=self.fault_domain,
            generation=self.generation,
            uid=self.uid,
            role_starts=self.role_starts,
            boot=self.boot,
            boot_starts=self.boot_starts,
        )

    @classmethod
    def from_record(cls, r: InstanceRecord) -> Instance:
        """Rebuild from the store."""
        return cls(
            vm=r.vm,
            deployment_id=r.deployment_id,
            role=r.role,
            index=r.index,
            host_id=r.host_id,
            ports=dict(r.ports),
            update_domain=r.update_domain,
            fault_domain=r.fault_domain,
            generation=r.generation,
            uid=r.uid,
            role_starts=r.role_starts,
            boot=r.boot,
            boot_starts=r.boot_starts,
        )


@dataclass(eq=False)
class Deployment:
    """A deployment as the controller runs it."""

    id: str
    service: str
    slot: Slot
    name: str
    label: str
    goal: DeploymentGoal
    generation: int
    folder: Path
    generations: dict[int, Generation]
    instances: dict[str, Instance] = field(default_factory=dict)
    upgrade: UpgradeRecord | None = None
    #: the request id of the operation changing it now, if any
    busy: str | None = None
    #: the transitional status shown while an operation runs
    phase: DeploymentStatus | None = None
    #: cancels the running operation (a delete does)
    cancel_scope: anyio.CancelScope | None = None
    #: the topology as last built, with what it was built from (see topology)
    _topology: tuple[object, dict[str, list[InstanceInfo]]] | None = field(default=None, repr=False)

    @property
    def current(self) -> Generation:
        """The generation the deployment is at (or moving to, during an upgrade)."""
        return self.generations[self.generation]

    def record(self, pool: str) -> DeploymentRecord:
        """The goal part, for the store."""
        return DeploymentRecord(
            id=self.id,
            pool=pool,
            service=self.service,
            slot=self.slot,
            name=self.name,
            label=self.label,
            goal=self.goal,
            generation=self.generation,
            upgrade=self.upgrade,
            folder=str(self.folder),
        )

    def by_role(self, role: str) -> list[Instance]:
        """A role's instances, by index."""
        return sorted((i for i in self.instances.values() if i.role == role), key=lambda i: i.index)

    def ordered(self) -> list[Instance]:
        """Every instance, by role then index."""
        return sorted(self.instances.values(), key=lambda i: (i.role, i.index))

    def find(self, name: str) -> Instance:
        """An instance by Azure id (``Role_IN_0``) or VM name.

        Raises:
            ControllerError: ResourceNotFound.
        """
        for inst in self.instances.values():
            if name in (inst.id, inst.vm):
                return inst
        raise ControllerError(
            "ResourceNotFound",
            f"deployment {self.name} has no role instance {name!r}; "
            f"its instances are {', '.join(i.id for i in self.ordered()) or 'none'}",
            404,
        )

    def topology(self) -> dict[str, list[InstanceInfo]]:
        """RoleEnvironment.roles: every role's instances and their endpoints.

        Built once and kept until an instance's topology fields, the instances or the
        generations change: every instance's GuestConfig carries it, so building it per
        instance made starting a deployment quadratic. Do not change what it returns."""
        key = (
            _TopologyEpoch.value,
            id(self.instances),
            len(self.instances),
            self.generation,
            tuple(id(g) for g in self.generations.values()),
        )
        cached = self._topology
        if cached is not None and cached[0] == key:
            return cached[1]
        roles = self._build_topology()
        self._topology = (key, roles)
        return roles

    def _build_topology(self) -> dict[str, list[InstanceInfo]]:
        # As in Azure, a role's instances are known at runtime only when it defines an internal
        # endpoint (RoleEnvironment.Roles lists the others with no instances): a role of
        # thousands of instances that never talk to each other does not send each of them the
        # whole list (the bytes started instances carry would grow as the square of the count).
        roles: dict[str, list[InstanceInfo]] = {r.name: [] for r in self.current.definition.roles}
        for inst in self.ordered():
            gen = self.generations[inst.generation]
            if not gen.role(inst.role).internal_endpoints:
                continue
            roles.setdefault(inst.role, []).append(
                InstanceInfo(
                    id=inst.id,
                    role_name=inst.role,
                    update_domain=inst.update_domain,
                    fault_domain=inst.fault_domain,
                    endpoints=instance_endpoints(gen.role(inst.role), inst.ports, inst.address or LOCALHOST),
                )
            )
        return roles

    def guest_config(
        self, inst: Instance, state_dir: Path, settings: Settings, generation: int | None = None
    ) -> GuestConfig:
        """Everything the instance's VM needs to boot, at its generation (or the one given)."""
        gen = self.generations[generation if generation is not None else inst.generation]
        return build_guest_config(
            gen.services[inst.role],
            inst.role,
            inst.index,
            deployment_id=self.id,
            state_dir=state_dir,
            ports=inst.ports,
            topology=self.topology(),
            settings=settings,
            update_domain=inst.update_domain,
            fault_domain=inst.fault_domain,
            vm=inst.vm,
            vm_uid=inst.uid or proposed_uid(),
            hosted_service=self.service,
            address=inst.address or LOCALHOST,
        )

    def view_status(self) -> DeploymentStatus:
        """The status DeploymentView shows."""
        if self.goal == "Deleting":
            return "Deleting"
        return self.phase or self.goal

    def summary(self) -> DeploymentSummary:
        """The deployment without its instances' views (their counts by role)."""
        roles = dict.fromkeys((r.name for r in self.current.definition.roles), 0)
        for inst in self.instances.values():
            if inst.role in roles:
                roles[inst.role] += 1
        return DeploymentSummary(
            service=self.service, slot=self.slot, name=self.name, status=self.view_status(), roles=roles
        )

    def view(
        self, endpoints: list[PublicEndpoint], instances: list[Instance] | None = None
    ) -> DeploymentView:
        """The stable machine-readable view (of ``instances`` only, when given: a page)."""
        gen = self.current
        upgrade = self.upgrade
        return DeploymentView(
            service=self.service,
            slot=self.slot,
            name=self.name,
            id=self.id,
            label=self.label,
            status=self.view_status(),
            upgrade_domain_count=gen.definition.upgrade_domain_count,
            next_upgrade_domain=upgrade.next_domain
            if upgrade is not None and upgrade.mode == "Manual"
            else -1,
            roles={r.name: len(self.by_role(r.name)) for r in gen.definition.roles},
            instances=[instance_view(i) for i in (self.ordered() if instances is None else instances)],
            endpoints=endpoints,
        )


def instance_view(inst: Instance) -> InstanceView:
    """One instance as `fabric status --json` shows it."""
    return InstanceView(
        id=inst.id,
        role=inst.role,
        status=inst.status,
        detail=inst.detail,
        host=inst.host_id,
        update_domain=inst.update_domain,
        fault_domain=inst.fault_domain,
        restarts=inst.role_restarts,
        endpoints={name: f"{inst.address or LOCALHOST}:{port}" for name, port in sorted(inst.ports.items())},
        uid=inst.uid,
    )
