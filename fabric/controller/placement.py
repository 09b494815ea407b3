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

import heapq
import random
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import anyio.to_thread

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
    #: takes no new instance (`fabric host cordon`)
    cordoned: bool = False

    @property
    def free(self) -> int:
        """Cores not taken (none on a cordoned host)."""
        return 0 if self.cordoned else self.cores - self.used


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
    #: fault domain -> heap of (used, number, position in hosts), built on first use: the
    #: hosts of a rack by (used, number), so placing one instance does not scan every host
    _racks: dict[int, list[tuple[int, int, int]]] | None = field(default=None, init=False, repr=False)
    _numbers: dict[int, int] | None = field(default=None, init=False, repr=False)

    def _rack_heaps(self) -> dict[int, list[tuple[int, int, int]]]:
        if self._racks is None:
            self._racks = {}
            self._numbers = {}
            for i, h in enumerate(self.hosts):
                self._racks.setdefault(h.fault_domain, []).append((h.used, h.number, i))
                self._numbers[h.number] = i
            for heap in self._racks.values():
                heapq.heapify(heap)
        return self._racks

    def _least_used(self, fault_domain: int, cores: int, skip: set[str]) -> HostSlot | None:
        """The host of a rack with ``cores`` free, not in ``skip``, of least (used, number)."""
        heap = self._rack_heaps().get(fault_domain)
        if not heap:
            return None
        aside: list[tuple[int, int, int]] = []
        found = None
        while heap:
            entry = heap[0]
            host = self.hosts[entry[2]]
            if entry[0] != host.used:
                heapq.heappop(heap)  # stale: the host was used since (its fresh entry is in)
                continue
            if host.free >= cores and host.id not in skip:
                found = host
                break
            heapq.heappop(heap)
            if host.free > 0:
                aside.append(entry)  # a smaller instance or another call may still fit it
        for entry in aside:
            heapq.heappush(heap, entry)
        return found

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
        same_rack = self._least_used(wanted, cores, skip)
        fitting = None
        if same_rack is None and len(self.hosts) >= self.max_hosts:
            others = [self._least_used(fd, cores, skip) for fd in list(self._rack_heaps())]
            fitting = min(
                (h for h in others if h is not None), key=lambda h: (h.used, h.number), default=None
            )
        if same_rack is not None:
            host = same_rack
        elif len(self.hosts) < self.max_hosts:
            host = self._new_host(wanted)
        elif fitting is not None:
            host = fitting
        else:
            total = sum(h.cores for h in self.hosts)
            raise capacity_error(
                f"not enough capacity: role {key[1]} needs {cores} free core{'s' if cores > 1 else ''} and the pool's "
                f"{len(self.hosts)} hosts ({total} cores) have no room; raise max_hosts or "
                "host_cores, or lower instance counts"
            )
        host.used += cores
        counts[host.fault_domain] += 1
        heapq.heappush(
            self._rack_heaps().setdefault(host.fault_domain, []),
            (host.used, host.number, self._index_of(host)),
        )
        return host

    def _index_of(self, host: HostSlot) -> int:
        self._rack_heaps()
        assert self._numbers is not None
        return self._numbers[host.number]

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
        if self._numbers is not None:
            self._numbers[host.number] = len(self.hosts) - 1
        return host

    def new_hosts(self) -> list[HostSlot]:
        """The hosts this plan would spin up."""
        return [h for h in self.hosts if h.new]

    def free_cores(self) -> int:
        """Cores free on the live hosts plus those of the hosts the pool may still spin up."""
        spare = max(0, self.max_hosts - len(self.hosts))
        return sum(max(0, h.free) for h in self.hosts) + spare * self.host_cores

    def check_room(self, demand: Iterable[tuple[RoleDefinition, int]]) -> None:
        """Refuse at once, by arithmetic, ``(role, new instances)`` that cannot fit the pool.

        Raises:
            ControllerError: BadRequest for an instance larger than a host; ConflictError (409)
                when the cores needed exceed the pool's free cores.
        """
        needed = 0
        for role, count in demand:
            cores = cores_of(role)
            if count and cores > self.host_cores:
                raise ControllerError(
                    "BadRequest",
                    f"role {role.name} needs {cores} cores per instance but hosts have {self.host_cores}; "
                    "choose a smaller vmsize or raise host_cores",
                )
            needed += cores * count
        free = self.free_cores()
        if needed > free:
            raise capacity_error(
                f"not enough capacity: the instances need {needed} cores and the pool has {free} free "
                f"({len(self.hosts)} of {self.max_hosts} hosts up, {self.host_cores} cores each); "
                "raise max_hosts or host_cores, or lower instance counts"
            )


def check_room(
    planner: Planner,
    ports: PortAllocator,
    demand: list[tuple[RoleDefinition, int]],
    *,
    total: int,
    max_instances: int,
) -> None:
    """Check a plan by arithmetic before any instance is built: the per-deployment instance
    limit (``total`` instances after the change), the pool's free cores, and local ports.

    Raises:
        ControllerError: BadRequest over the instance limit; ConflictError (409) without room.
    """
    if total > max_instances:
        raise ControllerError(
            "BadRequest",
            f"the deployment would have {total} instances; a deployment may have at most "
            f"{max_instances} (the fabric's max_instances setting), so lower the instance counts",
        )
    planner.check_room(demand)
    ports.check_room(demand)


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
#: Bind tests one allocation may make in all (a bind takes microseconds: this bounds a plan that
#: meets a range full of other programs' sockets to a fraction of a second, in a worker thread).
MAX_PROBES = 20_000
_draw = random.Random()
#: Port plans probe sockets in a worker thread, one plan at a time.
_probing: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("port_probing")


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (Linux's default: 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def out_of_ports(message: str) -> ControllerError:
    """The error for a plan that needs more local ports than are left (409: nothing changed)."""
    return ControllerError("ConflictError", message, 409)


def fixed_candidates(endpoint: InternalEndpoint) -> list[tuple[int, int]]:
    """An internal endpoint's FixedPort/FixedPortRange list as sorted, disjoint inclusive ranges."""
    spans = sorted(
        [(p, p) for p in endpoint.fixed_ports] + [(r.min, r.max) for r in endpoint.fixed_port_ranges]
    )
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if low > high:
            continue
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _any_port_endpoints(role: RoleDefinition) -> int:
    """Endpoints of one instance of ``role`` that take a port from the shared range."""
    fixed = sum(1 for e in role.internal_endpoints if e.fixed_ports or e.fixed_port_ranges)
    return role.endpoint_count - fixed


class PortAllocator:
    """Hands out local ports that nothing listens on and no other instance was given.

    Arithmetic first (``check_room``: a plan that cannot fit is refused before any socket is
    touched), then bounded bind tests (at most ``max_probes`` in all). The bind tests are
    quick system calls, but a plan makes thousands: run it off the event loop
    (``instance_ports_off_loop``).

    Args:
        taken: ports already given to instances or load balancers of the pool.
        max_probes: bind tests this allocator may make before it gives up (409).
    """

    def __init__(self, taken: Iterable[int], *, max_probes: int = MAX_PROBES) -> None:
        self.taken = set(taken)
        self.max_probes = self.probes_left = max_probes
        low = _ephemeral_low()
        # The shared range: below the kernel's ephemeral range when there is room (a port from
        # that range can be handed to an outgoing connection before the instance binds it).
        self.first, self.last = (_FIRST_PRIVATE, low - 1) if low - _FIRST_PRIVATE >= 1000 else (1024, 65535)

    # -- arithmetic ---------------------------------------------------------------------------------

    def room(self) -> int:
        """Ports of the shared range not given out yet (some may be bound by other programs)."""
        given = sum(1 for p in self.taken if self.first <= p <= self.last)
        return self.last - self.first + 1 - given

    def check_room(self, demand: Iterable[tuple[RoleDefinition, int]]) -> None:
        """Refuse at once a plan of ``(role, new instances)`` that needs more ports than are left.

        Raises:
            ControllerError: ConflictError (409) naming what does not fit.
        """
        demand = list(demand)
        needed = sum(count * _any_port_endpoints(role) for role, count in demand)
        room = self.room()
        if needed > room:
            raise out_of_ports(
                f"not enough local ports: the instances need {needed} and {room} are left in "
                f"{self.first}-{self.last} on {LOCALHOST}; lower instance counts or endpoints"
            )
        for role, count in demand:
            for e in role.internal_endpoints:
                spans = fixed_candidates(e)
                if not spans or not count:
                    continue
                total = sum(high - low + 1 for low, high in spans)
                given = sum(1 for p in self.taken if any(low <= p <= high for low, high in spans))
                if count > total - given:
                    raise self._fixed_full(role.name, e, spans, count, total - given)

    # -- bind tests -----------------------------------------------------------------------------------

    def _probe(self, port: int, protocol: str) -> bool:
        if self.probes_left <= 0:
            raise out_of_ports(
                f"no free local port found: {self.max_probes} bind tests on {LOCALHOST} met ports in use; "
                f"stop what holds ports {self.first}-{self.last} or lower instance counts"
            )
        self.probes_left -= 1
        return port_is_free(port, protocol)

    def any_free(self) -> int:
        """A port of the shared range nothing is bound to now (TCP and UDP), not given out before.

        Raises:
            ControllerError: ConflictError when none is found within the probe budget.
        """
        span = self.last - self.first + 1
        start = _draw.randrange(span)
        for step in range(span):
            port = self.first + (start + step) % span
            if port in self.taken:
                continue
            if self._probe(port, "tcp") and self._probe(port, "udp"):
                self.taken.add(port)
                return port
        raise out_of_ports(
            f"no free local port: every port of {self.first}-{self.last} on {LOCALHOST} is given out "
            "or in use; lower instance counts or endpoints"
        )

    def fixed(self, role: str, endpoint: InternalEndpoint) -> int:
        """The first free port of an internal endpoint's FixedPort/FixedPortRange list.

        Raises:
            ControllerError: ConflictError when every one is taken (one port per instance).
        """
        protocol = "udp" if endpoint.protocol == "udp" else "tcp"
        spans = fixed_candidates(endpoint)
        for low, high in spans:
            for port in range(low, high + 1):
                if port not in self.taken and self._probe(port, protocol):
                    self.taken.add(port)
                    return port
        raise self._fixed_full(role, endpoint, spans)

    @staticmethod
    def _fixed_full(
        role: str, endpoint: InternalEndpoint, spans: list[tuple[int, int]], wanted: int = 0, left: int = 0
    ) -> ControllerError:
        shown = [str(low) if low == high else f"{low}-{high}" for low, high in spans[:10]]
        listed = ", ".join(shown) + (", ..." if len(spans) > 10 else "")
        need = f" ({wanted} instances need one each, {left} left)" if wanted else ""
        return out_of_ports(
            f"role {role}: internal endpoint {endpoint.name} has fixed ports ({listed}) and all are in "
            f"use{need}; instances share 127.0.0.1, so give a FixedPortRange with one port per instance"
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

    async def instance_ports_off_loop(self, roles: list[RoleDefinition]) -> list[dict[str, int]]:
        """``instance_ports`` for each role of ``roles`` (one per new instance), in a worker
        thread: the bind tests of a big plan must not stall the controller's event loop.

        Raises:
            ControllerError: ConflictError (409) when the ports run out (nothing is given out).
        """
        if not roles:
            return []
        try:
            limiter = _probing.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(1)
            _probing.set(limiter)
        before = set(self.taken)
        try:
            return await anyio.to_thread.run_sync(
                lambda: [self.instance_ports(r) for r in roles], limiter=limiter
            )
        except BaseException:
            self.taken = before
            raise
