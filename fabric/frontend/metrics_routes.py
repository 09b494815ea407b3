"""``GET /metrics``: the fabric in the Prometheus exposition format (prometheus_client).

Nothing is counted at call sites for this: each scrape asks every pool's controller for a
MetricsSnapshot (fabric.controller.metrics) and a custom Collector turns those numbers into
metric families, so a scrape always shows the controller's views as they are now.

The token protects it like every route, unless the fabric runs with ``--metrics-public``: then
anyone may scrape, and the text is rendered at most once a CACHE_SECONDS (later scrapes within
it get the same text), so a flood of anonymous scrapes asks the controllers nothing more.

Label cardinality stays bounded by what the fabric can hold: instance series number at most the
instances placed (each takes a core of a bounded pool, and a snapshot carries at most
``MAX_INSTANCES``; ``fabric_metrics_instances_dropped`` counts the rest), status is one of the
15 Service Management values, fault kinds and event kinds are fixed sets, operation names are
the controller's own dozen, endpoints are those of the deployed definitions, hosts at most
``max_hosts``. No label carries a request's own text (no paths, ids or messages).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import anyio
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from fabric.controller.events import DURATION_BUCKETS, EVENT_KINDS
from fabric.controller.metrics import MetricsQuery, MetricsSnapshot
from fabric.frontend._http import Request, Response
from fabric.frontend.auth import token_matches
from fabric.frontend.ffe import Forward, ListPools
from fabric.frontend.streams import RawResponse
from fabric.model.status import ALL_STATUSES

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe


#: with metrics_public, a rendered text serves every scrape for this many seconds
CACHE_SECONDS = 1.0


@dataclass
class _Rendered:
    """The last text rendered for one public RDFE, and when."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    at: float = -math.inf
    text: bytes = b""


_rendered: WeakKeyDictionary[Rdfe, _Rendered] = WeakKeyDictionary()


async def route(rdfe: Rdfe, r: Request) -> Response:
    """Answer ``GET /metrics``."""
    rdfe._allow(r, "GET")
    if not rdfe.metrics_public or token_matches(rdfe._token, r.headers.get("authorization")):
        # the token's holders see the views as they are now
        return RawResponse(200, await render(rdfe), CONTENT_TYPE_PLAIN_0_0_4)
    cache = _rendered.setdefault(rdfe, _Rendered())
    async with cache.lock:  # one scrape renders; those arriving meanwhile take its text
        if anyio.current_time() - cache.at >= CACHE_SECONDS:
            cache.text = await render(rdfe)
            cache.at = anyio.current_time()
        return RawResponse(200, cache.text, CONTENT_TYPE_PLAIN_0_0_4)


async def render(rdfe: Rdfe) -> bytes:
    """The exposition text of every pool's views, now."""
    # 0.0.4, the text format every Prometheus reads (our names need none of 1.0.0's UTF-8).
    return generate_latest(registry_of(await snapshots(rdfe)))


async def snapshots(rdfe: Rdfe) -> list[MetricsSnapshot]:
    """Every pool's MetricsSnapshot, now."""
    return [
        await rdfe.ask_ffe(Forward(pool=pool.name, command=MetricsQuery()))
        for pool in await rdfe.ask_ffe(ListPools())
    ]


def registry_of(snaps: list[MetricsSnapshot]) -> CollectorRegistry:
    """A registry holding one FabricCollector over ``snaps``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FabricCollector(snaps))
    return registry


class FabricCollector:
    """A prometheus_client Collector over snapshots of the controllers' views."""

    def __init__(self, snaps: Iterable[MetricsSnapshot]) -> None:
        self.snaps = list(snaps)

    def collect(self) -> Iterator[Metric]:
        """The metric families (see the module docstring for the bounds on their labels)."""
        yield from self._instances()
        yield from self._hosts()
        yield from self._balancers()
        yield from self._controller()

    def _instances(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "fabric_instances",
            "Role instances by status (Service Management API values; every status is listed, 0 included).",
            labels=["pool", "service", "slot", "role", "status"],
        )
        restarts = CounterMetricFamily(
            "fabric_role_host_restarts",
            "Role host starts of an instance after its first, for any reason (as kube-state-metrics' "
            "pod restarts); kept across restarts of the fabric.",
            labels=["pool", "service", "slot", "role", "instance"],
        )
        heard = GaugeMetricFamily(
            "fabric_vm_heartbeat_age_seconds",
            "Seconds since the VM's host last reported its status (on every heartbeat and change).",
            labels=["pool", "service", "slot", "instance", "host"],
        )
        dropped = GaugeMetricFamily(
            "fabric_metrics_instances_dropped",
            "Instances left out of the per-instance series (over the cardinality bound).",
            labels=["pool"],
        )
        for snap in self.snaps:
            counts: Counter[tuple[str, str, str, str]] = Counter()
            roles: set[tuple[str, str, str]] = set()
            for i in snap.instances:
                roles.add((i.service, i.slot, i.role))
                counts[(i.service, i.slot, i.role, i.status)] += 1
                restarts.add_metric([snap.pool, i.service, i.slot, i.role, i.instance], i.restarts)
                if i.heard_age is not None:
                    heard.add_metric([snap.pool, i.service, i.slot, i.instance, i.host], i.heard_age)
            for service, slot, role in sorted(roles):
                for status in ALL_STATUSES:
                    by_status.add_metric(
                        [snap.pool, service, slot, role, status], counts[(service, slot, role, status)]
                    )
            dropped.add_metric([snap.pool], snap.instances_dropped)
        yield from (by_status, restarts, heard, dropped)

    def _hosts(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "fabric_host_heartbeat_age_seconds",
            "Seconds since the host's last heartbeat reached the controller.",
            labels=["pool", "host"],
        )
        alive = GaugeMetricFamily(
            "fabric_host_alive", "1 while the host is not declared dead.", labels=["pool", "host"]
        )
        for snap in self.snaps:
            for h in snap.hosts:
                age.add_metric([snap.pool, h.host], h.heartbeat_age)
                alive.add_metric([snap.pool, h.host], 1.0 if h.alive else 0.0)
        yield from (age, alive)

    def _balancers(self) -> Iterator[Metric]:
        labels = ["pool", "service", "slot", "endpoint"]
        active = GaugeMetricFamily(
            "fabric_lb_connections_active", "Connections open through the load balancer.", labels=labels
        )
        total = CounterMetricFamily(
            "fabric_lb_connections", "Client connections the load balancer accepted.", labels=labels
        )
        traffic = CounterMetricFamily(
            "fabric_lb_bytes",
            "Bytes through the load balancer (up: client to instance; down: instance to client).",
            labels=[*labels, "direction"],
        )
        refusals = CounterMetricFamily(
            "fabric_lb_refusals",
            "Connects refused (by an instance, retried elsewhere) or rejected (no instance could take it).",
            labels=[*labels, "reason"],
        )
        rotation = GaugeMetricFamily(
            "fabric_lb_rotation_size", "Instances new connections may go to now.", labels=labels
        )
        for snap in self.snaps:
            for b in snap.balancers:
                where = [snap.pool, b.service, b.slot, b.endpoint]
                active.add_metric(where, b.active)
                total.add_metric(where, b.connections)
                traffic.add_metric([*where, "up"], b.bytes_up)
                traffic.add_metric([*where, "down"], b.bytes_down)
                refusals.add_metric([*where, "refused"], b.refused)
                refusals.add_metric([*where, "rejected"], b.rejected)
                rotation.add_metric(where, b.rotation)
        yield from (active, total, traffic, refusals, rotation)

    def _controller(self) -> Iterator[Metric]:
        durations = HistogramMetricFamily(
            "fabric_controller_operation_duration_seconds",
            "How long the controller's operations took, accepted to finished.",
            labels=["pool", "operation"],
        )
        faults = CounterMetricFamily(
            "fabric_faults_injected", "Faults chaos injected, by kind.", labels=["pool", "kind"]
        )
        events = CounterMetricFamily(
            "fabric_events", "Events recorded on the fabric's timeline, by kind.", labels=["pool", "kind"]
        )
        for snap in self.snaps:
            for operation, (counts, seconds) in sorted(snap.durations.items()):
                cumulative, buckets = 0, []
                for bound, count in zip([*map(str, DURATION_BUCKETS), "+Inf"], counts, strict=True):
                    cumulative += count
                    buckets.append((bound, float(cumulative)))
                durations.add_metric([snap.pool, operation], buckets, seconds)
            for kind, count in sorted(snap.faults.items()):
                faults.add_metric([snap.pool, kind], count)
            for kind in EVENT_KINDS:  # each kind, 0 included: a rate needs the series from the start
                events.add_metric([snap.pool, kind], snap.events.get(kind, 0))
        yield from (durations, faults, events)
