"""FFE's choice of machine pool: affinity group, then location, then availability and load."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fabric.controller.messages import CreateDeployment, ListDeployments
from tests.fabric.frontend.frontend_kit import Api, open_api
from tests.fabric.frontend.test_api import error_of


@pytest.fixture
async def pooled(tmp_path: Path) -> AsyncIterator[Api]:
    """Three pools: two in Local, one in West."""
    async with open_api(
        tmp_path / "state", pools=[("p1", "Local"), ("p2", "Local"), ("west", "West")]
    ) as api:
        yield api


def created_in(api: Api, service: str) -> list[str]:
    """The pools whose controller received a CreateDeployment for `service`."""
    return [
        name
        for name, (controller, _) in api.pools.items()
        for m in controller.received
        if isinstance(m, CreateDeployment) and m.service == service
    ]


async def deploy_with(api: Api, package: bytes, hello: Path, service: str, instances: int) -> None:
    config = (
        (hello / "ServiceConfiguration.Local.cscfg")
        .read_bytes()
        .replace(b'count="2"', f'count="{instances}"'.encode())
    )
    resp = await api.deploy(package, service=service, Configuration=base64.b64encode(config).decode())
    assert resp.status_code == 202, resp.text


async def test_location_picks_the_pool(pooled: Api, hello_package: bytes, hello: Path) -> None:
    await pooled.create_service("westy", Location="west")
    await deploy_with(pooled, hello_package, hello, "westy", 1)
    assert created_in(pooled, "westy") == ["west"]
    # Later commands follow the hosted service to its pool.
    resp = await pooled.http.post(
        pooled.slot("westy"), params={"comp": "status"}, json={"Status": "Suspended"}
    )
    assert resp.status_code == 202
    assert (await pooled.http.get(pooled.slot("westy"))).json()["status"] == "Suspended"


async def test_least_loaded_pool_wins_and_affinity_groups_stay_together(
    pooled: Api, hello_package: bytes, hello: Path
) -> None:
    await pooled.create_service("a", AffinityGroup="g")
    await deploy_with(pooled, hello_package, hello, "a", 3)
    assert created_in(pooled, "a") == ["p1"]  # a tie: the first pool of the location
    await pooled.create_service("c", Location="Local")
    await deploy_with(pooled, hello_package, hello, "c", 1)
    assert created_in(pooled, "c") == ["p2"]  # p1 runs 3 instances, p2 none
    await pooled.create_service("b", AffinityGroup="g")
    await deploy_with(pooled, hello_package, hello, "b", 1)
    assert created_in(pooled, "b") == ["p1"]  # with its group, though p2 is less loaded


async def test_a_pool_whose_controller_is_gone_is_skipped(
    pooled: Api, hello_package: bytes, hello: Path
) -> None:
    await pooled.pools["p1"][1].stop()
    await pooled.create_service("s", Location="Local")
    await deploy_with(pooled, hello_package, hello, "s", 1)
    assert created_in(pooled, "s") == ["p2"]


async def test_no_available_pool_is_a_503_that_changes_nothing(
    pooled: Api, hello_package: bytes, hello: Path
) -> None:
    await pooled.pools["west"][1].stop()
    await pooled.create_service("w", Location="West")
    before = (pooled.state / "rdfe.json").read_bytes()
    resp = await pooled.deploy(hello_package, service="w")
    assert error_of(resp) == (503, "ServiceUnavailable")
    assert (pooled.state / "rdfe.json").read_bytes() == before
    assert not list((pooled.state / "packages").rglob("*.cspkg"))
    for controller, _ in pooled.pools.values():
        assert all(isinstance(m, ListDeployments) for m in controller.received)
