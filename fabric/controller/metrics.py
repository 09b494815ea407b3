"""What the controller shows to ``/metrics``: one snapshot of its current views, taken at scrape time.

Nothing is instrumented at call sites beyond what the controller keeps anyway (instance status
and restarts, when each host and VM was last heard, the load balancers' own counters, the event
log's counts and operation durations); a scrape asks for a ``MetricsSnapshot`` and RDFE turns it
into the Prometheus exposition format (fabric.frontend.metrics_routes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio
import msgspec

from actors import Request

if TYPE_CHECKING:
    from fabric.controller.state import ControllerState

#: a snapshot carries at most this many instances (and VMs): a bound on label cardinality
MAX_INSTANCES: Final = 2000


class MetricsQuery(Request["MetricsSnapshot"], frozen=True):
    """Ask a controller for its MetricsSnapshot."""


class InstanceMetric(msgspec.Struct, frozen=True, kw_only=True):
    """One role instance."""

    service: str
    slot: str
    role: str
    instance: str
    host: str
    status: str
    restarts: int
    #: seconds since its host last reported its status (None: never, or not placed)
    heard_age: float | None


class HostMetric(msgspec.Struct, frozen=True, kw_only=True):
    """One host of the pool."""

    host: str
    alive: bool
    #: seconds since its last heartbeat
    heartbeat_age: float
    #: cores it has, and those the instances placed on it take
    cores: int = 0
    cores_used: int = 0
    #: its host agent's pid (0: not started)
    pid: int = 0


class BalancerMetric(msgspec.Struct, frozen=True, kw_only=True):
    """One load-balanced input endpoint."""

    service: str
    slot: str
    endpoint: str  # Role/Endpoint
    active: int
    connections: int
    refused: int
    rejected: int
    bytes_up: int
    bytes_down: int
    rotation: int


class MetricsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one controller reports to /metrics."""

    pool: str
    instances: list[InstanceMetric]
    instances_dropped: int
    hosts: list[HostMetric]
    balancers: list[BalancerMetric]
    #: operation kind -> (count per bucket of fabric.controller.events.DURATION_BUCKETS, then +Inf; sum)
    durations: dict[str, tuple[list[int], float]]
    faults: dict[str, int]
    events: dict[str, int]


def metrics_snapshot(state: ControllerState) -> MetricsSnapshot:
    """The controller's current views, as numbers."""
    now = anyio.current_time()
    instances: list[InstanceMetric] = []
    balancers: list[BalancerMetric] = []
    total = 0
    live = {inst.vm for _, inst in state.instances()}
    for vm in [vm for vm in state.vm_heard if vm not in live]:
        del state.vm_heard[vm]  # gone VMs: the map stays as small as the pool
    for dep in sorted(state.deployments.values(), key=lambda d: (d.service, d.slot)):
        for inst in dep.ordered():
            total += 1
            if len(instances) >= MAX_INSTANCES:
                continue
            heard = state.vm_heard.get(inst.vm) if inst.host_id else None
            instances.append(
                InstanceMetric(
                    service=dep.service,
                    slot=dep.slot,
                    role=inst.role,
                    instance=inst.id,
                    host=inst.host_id,
                    status=inst.status,
                    restarts=inst.role_restarts,
                    heard_age=None if heard is None else max(0.0, now - heard),
                )
            )
        for ep in state.rotation.endpoints(dep):
            lb = state.rotation.balancer(dep.id, ep.role, ep.name)
            if lb is None:
                continue  # an instance's own forwarded port: no balancing there
            stats = lb.stats()
            balancers.append(
                BalancerMetric(
                    service=dep.service,
                    slot=dep.slot,
                    endpoint=f"{ep.role}/{ep.name}",
                    active=stats.active,
                    connections=stats.connections,
                    refused=stats.refused,
                    rejected=stats.rejected,
                    bytes_up=stats.bytes_up,
                    bytes_down=stats.bytes_down,
                    rotation=len(lb.rotation()),
                )
            )
    used = state.used_cores()
    hosts = [
        HostMetric(
            host=h.id,
            alive=h.alive,
            heartbeat_age=max(0.0, now - h.last_seen),
            cores=h.record.cores,
            cores_used=used.get(h.id, 0),
            pid=h.pid,
        )
        for h in sorted(state.hosts.hosts.values(), key=lambda h: h.record.number)
    ]
    events = state.events
    return MetricsSnapshot(
        pool=state.pool,
        instances=instances,
        instances_dropped=total - len(instances),
        hosts=hosts,
        balancers=balancers,
        durations={k: (list(c), s) for k, (c, s) in events.durations.kinds.items()},
        faults=dict(events.faults),
        events=dict(events.totals),
    )
