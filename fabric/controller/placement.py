"""Placement: which host runs an instance, its update and fault domains, and its local ports.

Pure bookkeeping over a snapshot of the hosts, so a whole deployment is planned (and refused
when it does not fit) before anything starts. Rules:

- an instance goes on a host with enough free cores for its vmsize; when none has room a new
  local host is planned, up to ``max_hosts`` live hosts of ``host_cores`` cores each;
- update domain = instance index modulo the definition's upgradeDomainCount;
- fault domains: hosts sit in one of two racks; each instance goes to the rack where its
  role has fewer instances, so losing one rack never takes a whole role down;
- every endpoint of every instance gets its own free port on 127.0.0.1 (instances share the
  address), except InternalEndpoint FixedPort/FixedPortRange, which are honoured.
"""

from __future__ import annotations

import random
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from fabric.controller.messages import ControllerError
from fabric.model.definition import InternalEndpoint, RoleDefinition
from fabric.model.vmsizes import UnknownVmSizeError, vm_size

#: Racks of the local pool (Azure's default fault domain count).
FAULT_DOMAINS = 2
LOCALHOST = "127.0.0.1"


def capacity_error(message: str) -> ControllerError:
    """The error for a pool that has no room (Azure answered ConflictError)."""
    return ControllerError("ConflictError", message, 409)


def cores_of(role: RoleDefinition) -> int:
    """Cores an instance of the role takes (ExtraSmall counts as one).

    Raises:
        ControllerError: BadRequest for a vmsize not in the table.
    """
    try:
        return vm_size(role.vm_size).cores
    except UnknownVmSizeError:
        raise ControllerError(
            "BadRequest", f"role {role.name}: vmsize {role.vm_size!r} is unknown; use Small, Medium, ..."
        ) from None


@dataclass
class HostSlot:
    """A host as placement sees it."""

    id: str
    number: int
    cores: int
    fault_domain: int
    used: int = 0
    new: bool = False

    @property
    def free(self) -> int:
        """Cores not taken."""
        return self.cores - self.used


@dataclass
class Planner:
    """Plans placements against a snapshot of live hosts; commit what it returns, or nothing.

    Args:
        hosts: the live hosts, with the cores their instances use.
        pool: the pool name (new host ids are ``<pool>-host<n>``).
        max_hosts: live hosts allowed.
        host_cores: cores of a new host.
        next_number: the number of the next new host (numbers are never reused).
        spread: (deployment id, role) -> instances per fault domain, to keep roles spread.
    """

    hosts: list[HostSlot]
    pool: str
    max_hosts: int
    host_cores: int
    next_number: int
    spread: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)

    def place(self, key: tuple[str, str], cores: int, *, avoid: Iterable[str] = ()) -> HostSlot:
        """Choose the host of one more instance of role ``key`` and count it there.

        Raises:
            ControllerError: ConflictError when no host (existing or new) has room.
        """
        if cores > self.host_cores:
            raise ControllerError(
                "BadRequest",
                f"role {key[1]} needs {cores} cores per instance but hosts have {self.host_cores}; "
                "choose a smaller vmsize or raise host_cores",
            )
        counts = self.spread.setdefault(key, Counter())
        wanted = min(range(FAULT_DOMAINS), key=lambda fd: (counts[fd], fd))
        skip = set(avoid)
        fitting = [h for h in self.hosts if h.free >= cores and h.id not in skip]
        same_rack = [h for h in fitting if h.fault_domain == wanted]
        if same_rack:
            host = min(same_rack, key=lambda h: (h.used, h.number))
        elif len(self.hosts) < self.max_hosts:
            host = self._new_host(wanted)
        elif fitting:
            host = min(fitting, key=lambda h: (h.used, h.number))
        else:
            total = sum(h.cores for h in self.hosts)
            raise capacity_error(
                f"not enough capacity: role {key[1]} needs {cores} free core{'s' if cores > 1 else ''} and the pool's "
                f"{len(self.hosts)} hosts ({total} cores) have no room; raise max_hosts or "
                "host_cores, or lower instance counts"
            )
        host.used += cores
        counts[host.fault_domain] += 1
        return host

    def _new_host(self, fault_domain: int) -> HostSlot:
        host = HostSlot(
            id=f"{self.pool}-host{self.next_number}",
            number=self.next_number,
            cores=self.host_cores,
            fault_domain=fault_domain,
            new=True,
        )
        self.next_number += 1
        self.hosts.append(host)
        return host

    def new_hosts(self) -> list[HostSlot]:
        """The hosts this plan would spin up."""
        return [h for h in self.hosts if h.new]


def update_domain(index: int, domain_count: int) -> int:
    """Azure's rule: instance n sits in update domain n mod upgradeDomainCount."""
    return index % max(1, domain_count)


# -- ports --------------------------------------------------------------------------------------


def port_is_free(port: int, protocol: str = "tcp") -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 now."""
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


#: Instance ports are drawn from here up to the ephemeral range (registered ports of common
#: services sit lower; a bind test skips any that is in use).
_FIRST_PRIVATE = 20000
_draw = random.Random()


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (Linux's default: 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class PortAllocator:
    """Hands out local ports that nothing listens on and no other instance was given.

    Args:
        taken: ports already given to instances or load balancers of the pool.
    """

    def __init__(self, taken: Iterable[int]) -> None:
        self.taken = set(taken)

    def any_free(self) -> int:
        """A port nothing is bound to now, not given out before.

        Drawn below the kernel's ephemeral range when there is room: a port from that range can
        be handed to an outgoing connection in the time before the instance binds it.
        """
        low = _ephemeral_low()
        if low - _FIRST_PRIVATE >= 1000:
            for _ in range(200):
                port = _draw.randrange(_FIRST_PRIVATE, low)
                if port not in self.taken and port_is_free(port) and port_is_free(port, "udp"):
                    self.taken.add(port)
                    return port
        for _ in range(100):
            with socket.socket() as probe:
                probe.bind((LOCALHOST, 0))
                port = int(probe.getsockname()[1])
            if port not in self.taken:
                self.taken.add(port)
                return port
        raise ControllerError("InternalError", "no free local port found on 127.0.0.1", 500)

    def fixed(self, role: str, endpoint: InternalEndpoint) -> int:
        """The first free port of an internal endpoint's FixedPort/FixedPortRange list.

        Raises:
            ControllerError: ConflictError when every one is taken (one port per instance).
        """
        candidates = list(endpoint.fixed_ports)
        for r in endpoint.fixed_port_ranges:
            candidates.extend(range(r.min, r.max + 1))
        protocol = "udp" if endpoint.protocol == "udp" else "tcp"
        for port in candidates:
            if port not in self.taken and port_is_free(port, protocol):
                self.taken.add(port)
                return port
        listed = ", ".join(str(p) for p in candidates[:10]) + (", ..." if len(candidates) > 10 else "")
        raise ControllerError(
            "ConflictError",
            f"role {role}: internal endpoint {endpoint.name} has fixed ports ({listed}) and all are in "
            "use; instances share 127.0.0.1, so give a FixedPortRange with one port per instance",
            409,
        )

    def instance_ports(self, role: RoleDefinition) -> dict[str, int]:
        """Ports for every endpoint of one new instance of ``role``."""
        ports: dict[str, int] = {}
        for ep in role.input_endpoints:
            ports[ep.name] = self.any_free()
        for iep in role.internal_endpoints:
            fixed = iep.fixed_ports or iep.fixed_port_ranges
            ports[iep.name] = self.fixed(role.name, iep) if fixed else self.any_free()
        for xep in role.instance_input_endpoints:
            ports[xep.name] = self.any_free()
        return ports
