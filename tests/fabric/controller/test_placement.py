"""Placement rules: cores, new hosts up to the limit, racks, update domains, local ports."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from fabric.controller.messages import ControllerError
from fabric.controller.placement import (
    HostSlot,
    Planner,
    PortAllocator,
    check_room,
    port_is_free,
    update_domain,
)
from fabric.model.definition import InternalEndpoint, PortRange, RoleDefinition


def planner(hosts: list[HostSlot] | None = None, *, max_hosts: int = 4, cores: int = 4) -> Planner:
    hosts = hosts or []
    return Planner(
        hosts=hosts,
        pool="p",
        max_hosts=max_hosts,
        host_cores=cores,
        next_number=max((h.number for h in hosts), default=0) + 1,
    )


def test_instances_of_a_role_alternate_racks_on_new_hosts() -> None:
    plan = planner()
    chosen = [plan.place(("d", "Web"), 1) for _ in range(4)]
    assert [h.fault_domain for h in chosen] == [0, 1, 0, 1]
    # Two hosts, one per rack, each holding two instances.
    assert [h.id for h in chosen] == ["p-host1", "p-host2", "p-host1", "p-host2"]
    assert [h.id for h in plan.new_hosts()] == ["p-host1", "p-host2"]


def test_a_full_host_makes_a_new_one_until_the_limit_then_capacity_error() -> None:
    plan = planner(max_hosts=2, cores=2)
    for _ in range(4):
        plan.place(("d", "Worker"), 1)
    assert sum(h.used for h in plan.hosts) == 4 and len(plan.hosts) == 2
    with pytest.raises(ControllerError) as caught:
        plan.place(("d", "Worker"), 1)
    assert caught.value.code == "ConflictError" and caught.value.status == 409
    assert "not enough capacity" in caught.value.message


def test_a_vmsize_bigger_than_a_host_is_a_bad_request() -> None:
    with pytest.raises(ControllerError) as caught:
        planner(cores=4).place(("d", "Big"), 8)
    assert caught.value.code == "BadRequest"
    assert "8 cores" in caught.value.message and "host_cores" in caught.value.message


def test_existing_hosts_are_used_before_new_ones_and_racks_keep_roles_spread() -> None:
    hosts = [HostSlot("p-host1", 1, 4, 0, used=3), HostSlot("p-host2", 2, 4, 1, used=0)]
    plan = planner(hosts, max_hosts=2)
    plan.spread[("d", "Web")] = Counter({1: 1})  # Web already has an instance in rack 1
    assert plan.place(("d", "Web"), 1).id == "p-host1"  # rack 0 has room: it goes there
    # Rack 0 is full now; a new host is not allowed, so rack 1 takes the next one.
    assert plan.place(("d", "Web"), 1).id == "p-host2"
    assert plan.new_hosts() == []


def test_update_domain_is_index_modulo_the_count() -> None:
    assert [update_domain(i, 3) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert update_domain(5, 1) == 0


def test_ports_are_distinct_and_free() -> None:
    role = RoleDefinition(
        name="R",
        kind="worker",
        internal_endpoints=(
            InternalEndpoint(name="A", protocol="tcp"),
            InternalEndpoint(name="B", protocol="tcp"),
        ),
    )
    ports = PortAllocator(set())
    got = [ports.instance_ports(role) for _ in range(5)]
    flat = [p for d in got for p in d.values()]
    assert len(set(flat)) == len(flat) == 10
    assert all(port_is_free(p) for p in flat)
    # Below the range the kernel hands to outgoing connections, which could take one first.
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ephemeral:
        first_ephemeral = int(ephemeral.read().split()[0])
    assert all(p < first_ephemeral for p in flat)


def test_fixed_ports_go_one_per_instance_and_run_out_with_a_clear_error() -> None:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        busy, free = a.getsockname()[1], b.getsockname()[1]
        b.close()  # `free` is free again; `busy` stays bound
        ep = InternalEndpoint(name="Metrics", protocol="tcp", fixed_ports=(busy, free))
        role = RoleDefinition(name="R", kind="worker", internal_endpoints=(ep,))
        ports = PortAllocator(set())
        assert ports.instance_ports(role) == {"Metrics": free}
        with pytest.raises(ControllerError) as caught:
            ports.instance_ports(role)
        assert caught.value.code == "ConflictError"
        assert "FixedPortRange" in caught.value.message and str(busy) in caught.value.message


def test_a_fixed_port_range_serves_several_instances() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = min(probe.getsockname()[1], 65000)
    ep = InternalEndpoint(name="M", protocol="tcp", fixed_port_ranges=(PortRange(min=base, max=base + 9),))
    role = RoleDefinition(name="R", kind="worker", internal_endpoints=(ep,))
    ports = PortAllocator(set())
    got = [ports.instance_ports(role)["M"] for _ in range(3)]
    assert len(set(got)) == 3 and all(base <= p <= base + 9 for p in got)


def worker(name: str = "R", *, endpoints: int = 1, size: str = "Small") -> RoleDefinition:
    """A worker role with ``endpoints`` internal endpoints that take any port."""
    eps = tuple(InternalEndpoint(name=f"E{i}", protocol="tcp") for i in range(endpoints))
    return RoleDefinition(name=name, kind="worker", vm_size=size, internal_endpoints=eps)


def test_capacity_is_compared_as_numbers_before_anything_is_built() -> None:
    plan = planner([HostSlot("p-host1", 1, 4, 0, used=3)], max_hosts=2, cores=4)
    assert plan.free_cores() == 1 + 4
    plan.check_room([(worker(), 5)])  # fits exactly
    with pytest.raises(ControllerError) as caught:
        plan.check_room([(worker(), 10**9)])
    assert caught.value.code == "ConflictError" and caught.value.status == 409
    assert "need 1000000000 cores and the pool has 5 free" in caught.value.message
    with pytest.raises(ControllerError) as too_big:
        plan.check_room([(worker(size="ExtraLarge"), 1)])
    assert too_big.value.code == "BadRequest" and "8 cores per instance" in too_big.value.message
    assert plan.new_hosts() == [] and plan.hosts[0].used == 3  # checking placed nothing


def test_the_instance_limit_comes_before_cores_and_ports() -> None:
    ports = PortAllocator(set())
    with pytest.raises(ControllerError) as caught:
        check_room(planner(), ports, [(worker(), 10**30)], total=10**30, max_instances=1000)
    assert caught.value.code == "BadRequest" and "at most 1000" in caught.value.message
    assert ports.probes_left == ports.max_probes  # no socket was touched


def test_ports_that_cannot_fit_are_refused_by_arithmetic() -> None:
    ports = PortAllocator(set())
    ports.first, ports.last = 40000, 40009  # ten ports left
    ports.taken = {40000, 40001}
    with pytest.raises(ControllerError) as caught:
        ports.check_room([(worker(endpoints=3), 3)])  # nine ports, eight left
    assert caught.value.code == "ConflictError" and caught.value.status == 409
    assert "need 9 and 8 are left" in caught.value.message
    assert ports.probes_left == ports.max_probes
    fixed = InternalEndpoint(name="M", protocol="tcp", fixed_port_ranges=(PortRange(min=41000, max=41002),))
    role = RoleDefinition(name="F", kind="worker", internal_endpoints=(fixed,))
    with pytest.raises(ControllerError) as full:
        PortAllocator({41000}).check_room([(role, 3)])
    assert full.value.code == "ConflictError" and "(3 instances need one each, 2 left)" in full.value.message


def test_probing_is_bounded_and_running_out_is_a_conflict() -> None:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        low = a.getsockname()[1]
        try:
            b.bind(("127.0.0.1", low + 1))
        except OSError:
            pytest.skip("the next port is in use")
        ports = PortAllocator(set(), max_probes=50)
        ports.first, ports.last = low, low + 1  # both bound by someone else
        with pytest.raises(ControllerError) as caught:
            ports.any_free()
        assert caught.value.code == "ConflictError" and caught.value.status == 409
        ports = PortAllocator(set(), max_probes=3)
        ports.first, ports.last = 20000, 32000
        ports.taken = set()
        with pytest.raises(ControllerError) as budget:
            for _ in range(10):
                ports.any_free()
        assert budget.value.code == "ConflictError" and "3 bind tests" in budget.value.message


async def test_a_big_plan_probes_off_the_event_loop() -> None:
    import threading

    loop_thread = threading.get_ident()
    seen: set[int] = set()

    class Watched(PortAllocator):
        def _probe(self, port: int, protocol: str) -> bool:
            seen.add(threading.get_ident())
            return super()._probe(port, protocol)

    ports = Watched(set())
    given = await ports.instance_ports_off_loop([worker(endpoints=2)] * 50)
    assert len({p for d in given for p in d.values()}) == 100
    assert seen and loop_thread not in seen
