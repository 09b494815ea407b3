"""Port rules: public ports unique in the service, listening ports unique within a role."""

from __future__ import annotations

from fabric.model._source import Loc, Report
from fabric.model.definition import RoleDefinition, ServiceDefinition


def _transports(protocol: str) -> tuple[str, ...]:
    return {"udp": ("udp",), "any": ("tcp", "udp")}.get(protocol, ("tcp",))


def check_public_ports(d: ServiceDefinition, report: Report) -> None:
    """Report public ports and per-instance port ranges that clash across the service."""
    used: dict[tuple[str, int], str] = {}
    ranges: list[tuple[str, int, int, str]] = []
    for i, role in enumerate(d.roles):
        for j, e in enumerate(role.input_endpoints):
            for t in _transports(e.protocol):
                other = used.get((t, e.port))
                if other:
                    report.error(
                        ("roles", i, "input_endpoints", j, "port"),
                        f"public port {e.port} is already used by {other}; pick another port",
                    )
                used[(t, e.port)] = f"{role.name}/{e.name}"
        for j, n in enumerate(role.instance_input_endpoints):
            r = n.allocate_public_port_from
            if r.min > r.max:
                report.error(
                    ("roles", i, "instance_input_endpoints", j, "allocate_public_port_from"),
                    f"range {r.min}-{r.max} is empty; make min <= max",
                )
                continue
            ranges.append((n.protocol, r.min, r.max, f"{role.name}/{n.name}"))
            for (t, port), owner in used.items():
                if t == n.protocol and r.min <= port <= r.max:
                    report.error(
                        ("roles", i, "instance_input_endpoints", j, "allocate_public_port_from"),
                        f"public port range {r.min}-{r.max} includes port {port} of {owner}; move the range",
                    )
    for a in range(len(ranges)):
        for b in range(a + 1, len(ranges)):
            pa, pb = ranges[a], ranges[b]
            if pa[0] == pb[0] and pa[1] <= pb[2] and pb[1] <= pa[2]:
                message = f"public port ranges of {pa[3]} and {pb[3]} overlap; make them disjoint"
                report.error((), message)


def check_local_ports(role: RoleDefinition, loc: Loc, report: Report) -> None:
    """Report endpoints of one role that would listen on the same port."""
    used: dict[tuple[str, int], str] = {}

    def claim(where: Loc, protocol: str, low: int, high: int, owner: str) -> None:
        for t in _transports(protocol):
            for port in range(low, min(high, low + 65535) + 1):
                other = used.get((t, port))
                if other and other != owner:
                    message = f"port {port} is already used by endpoint {other} in role {role.name}"
                    report.error(where, f"{message}; pick another port")
                    return
                used[(t, port)] = owner

    for j, e in enumerate(role.input_endpoints):
        fixed = e.fixed_local_port
        if fixed is not None:
            claim(
                (*loc, "input_endpoints", j, "local_port" if e.local_port else "port"),
                e.protocol,
                fixed,
                fixed,
                e.name,
            )
    for j, ie in enumerate(role.internal_endpoints):
        iloc: Loc = (*loc, "internal_endpoints", j)
        if ie.port is not None:
            claim((*iloc, "port"), ie.protocol, ie.port, ie.port, ie.name)
        for k, p in enumerate(ie.fixed_ports):
            claim((*iloc, "fixed_ports", k), ie.protocol, p, p, ie.name)
        for k, r in enumerate(ie.fixed_port_ranges):
            claim((*iloc, "fixed_port_ranges", k), ie.protocol, r.min, r.max, ie.name)
    for j, n in enumerate(role.instance_input_endpoints):
        claim(
            (*loc, "instance_input_endpoints", j, "local_port"),
            n.protocol,
            n.local_port,
            n.local_port,
            n.name,
        )
