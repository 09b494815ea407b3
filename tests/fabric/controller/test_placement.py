"""Placement rules: cores, new hosts up to the limit, racks, update domains, local ports."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from fabric.controller.messages import ControllerError
from fabric.controller.placement import HostSlot, Planner, PortAllocator, port_is_free, update_domain
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
