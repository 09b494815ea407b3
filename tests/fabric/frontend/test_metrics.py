"""/metrics: the Prometheus exposition of the controller's views, with and without the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fabric.controller.metrics import BalancerMetric, HostMetric, InstanceMetric, MetricsSnapshot
from fabric.frontend.metrics_routes import registry_of
from tests.fabric.frontend.real_fabric_kit import RealFabric, open_real_fabric
from tests.fabric.frontend.test_cli import cli


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value of an exposition text."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    [v] = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls]
    return v


@pytest.fixture
async def fabric(tmp_path: Path, hello: Path) -> AsyncIterator[RealFabric]:
    async with open_real_fabric(tmp_path / "state") as served:
        code, _, err = await cli("deploy", str(hello), *served.cli_state)
        assert code == 0, err
        yield served


async def scrape(fabric: RealFabric, **headers: str) -> httpx.Response:
    return await fabric.http.get("/metrics", headers=headers or None)


async def test_metrics_need_the_token_unless_public(fabric: RealFabric, tmp_path: Path) -> None:
    refused = await scrape(fabric, authorization="Bearer wrong")
    assert refused.status_code == 401
    async with (
        open_real_fabric(tmp_path / "public", metrics_public=True) as public,
        httpx.AsyncClient(base_url=public.url) as anonymous,
    ):
        resp = await anonymous.get("/metrics")
        assert resp.status_code == 200 and "fabric_host_alive" in resp.text
        assert (await anonymous.get("/events")).status_code == 401  # only /metrics is public
        assert (await anonymous.post("/metrics")).status_code == 401


async def test_instance_counts_and_restarts_change_when_a_role_host_dies(fabric: RealFabric) -> None:
    resp = await scrape(fabric)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    before = samples(resp.text)
    assert value(before, "fabric_instances", role="Hello", status="ReadyRole") == 2
    assert value(before, "fabric_instances", role="Hello", status="RestartingRole") == 0
    assert value(before, "fabric_role_host_restarts_total", instance="Hello_IN_0") == 0
    assert (
        value(before, "fabric_controller_operation_duration_seconds_count", operation="CreateDeployment") == 1
    )
    hosts = [ls for (n, ls), _ in before.items() if n == "fabric_host_heartbeat_age_seconds"]
    assert hosts and all(v < 30 for (n, _), v in before.items() if n.endswith("heartbeat_age_seconds"))

    vm = next(vm for vm in fabric.world.running() if vm.endswith(".Hello_IN_0"))
    await fabric.report(vm, "RestartingRole", restarts=1)
    after = samples((await scrape(fabric)).text)
    assert value(after, "fabric_instances", role="Hello", status="ReadyRole") == 1
    assert value(after, "fabric_instances", role="Hello", status="RestartingRole") == 1
    assert value(after, "fabric_role_host_restarts_total", instance="Hello_IN_0") == 1
    assert (
        value(after, "fabric_events_total", kind="heal")
        == value(before, "fabric_events_total", kind="heal") + 1
    )


def test_the_collector_draws_balancers_faults_and_durations_from_a_snapshot() -> None:
    snap = MetricsSnapshot(
        pool="local",
        instances=[
            InstanceMetric(
                service="gb",
                slot="production",
                role="Web",
                instance="Web_IN_0",
                host="local-host1",
                status="ReadyRole",
                restarts=3,
                heard_age=0.5,
            )
        ],
        instances_dropped=0,
        hosts=[HostMetric(host="local-host1", alive=True, heartbeat_age=1.5)],
        balancers=[
            BalancerMetric(
                service="gb",
                slot="production",
                endpoint="Web/HttpIn",
                active=2,
                connections=10,
                refused=1,
                rejected=0,
                bytes_up=100,
                bytes_down=2000,
                rotation=1,
            )
        ],
        durations={"CreateDeployment": ([0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 700.4)},
        faults={"kill": 2},
        events={"fault": 4},
    )
    from prometheus_client.exposition import generate_latest

    found = samples(generate_latest(registry_of([snap])).decode())
    lb = {"endpoint": "Web/HttpIn", "service": "gb"}
    assert value(found, "fabric_lb_connections_total", **lb) == 10
    assert value(found, "fabric_lb_connections_active", **lb) == 2
    assert value(found, "fabric_lb_bytes_total", direction="down", **lb) == 2000
    assert value(found, "fabric_lb_refusals_total", reason="refused", **lb) == 1
    assert value(found, "fabric_lb_rotation_size", **lb) == 1
    assert value(found, "fabric_faults_injected_total", kind="kill") == 2
    assert value(found, "fabric_vm_heartbeat_age_seconds", instance="Web_IN_0") == 0.5
    histogram = "fabric_controller_operation_duration_seconds_bucket"
    assert value(found, histogram, le="0.25") == 0 and value(found, histogram, le="0.5") == 1
    assert value(found, histogram, le="600.0") == 1 and value(found, histogram, le="+Inf") == 2
    statuses = [ls for (n, ls), _ in found.items() if n == "fabric_instances"]
    assert len(statuses) == 15  # every status of the role, 0 included: a fixed bound per role
