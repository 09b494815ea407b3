"""Rotation is incremental: an instance's status change reaches its own balancers only (the
load-balanced endpoints of its role, its instance input forwarders), as one backend's update,
and traffic still follows it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from fabric.network import Backend, LoadBalancer
from tests.fabric.controller.controller_kit import (
    all_ready,
    answers,
    change_status,
    create,
    echo_servers,
    free_port,
    open_controller,
    wait_view,
)
from tests.fabric.controller.controller_standin import World

TWO_ROLES = """
name = "Demo"

[[roles]]
name = "Front"
kind = "worker"
vm_size = "Small"

[[roles.input_endpoints]]
name = "Http"
protocol = "tcp"
port = {front}

[[roles.instance_input_endpoints]]
name = "Debug"
protocol = "tcp"
local_port = 2222

[roles.instance_input_endpoints.allocate_public_port_from]
min = {low}
max = {high}

[[roles]]
name = "Back"
kind = "worker"
vm_size = "Small"

[[roles.input_endpoints]]
name = "Api"
protocol = "tcp"
port = {back}
"""

CONFIG = b"""
service_name = "Demo"

[[roles]]
name = "Front"
instances = 3

[[roles]]
name = "Back"
instances = 2
"""


class Calls(list[tuple[str, str, tuple[str, ...]]]):
    """The calls seen, and the balancers that got them."""

    def __init__(self) -> None:
        super().__init__()
        self.balancers: dict[int, LoadBalancer] = {}

    async def synced(self) -> None:
        """Wait until each balancer's kernel data path (as root) follows the calls."""
        for lb in self.balancers.values():
            await lb.synced()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every set_backends and update a load balancer gets: (endpoint, call, instance ids)."""
    seen = Calls()
    set_backends, update = LoadBalancer.set_backends, LoadBalancer.update

    def record_set(self: LoadBalancer, backends: Iterable[Backend]) -> None:
        backends = list(backends)
        seen.append((self.spec.name, "set", tuple(b.instance_id for b in backends)))
        seen.balancers[id(self)] = self
        set_backends(self, backends)

    def record_update(self: LoadBalancer, instance_id: str, **status: Any) -> None:
        seen.append((self.spec.name, "update", (instance_id,)))
        seen.balancers[id(self)] = self
        update(self, instance_id, **status)

    monkeypatch.setattr(LoadBalancer, "set_backends", record_set)
    monkeypatch.setattr(LoadBalancer, "update", record_update)
    return seen


async def test_a_status_change_reaches_only_its_instances_balancers(
    tmp_path: Path, world: World, state_dir: Path, calls: Calls
) -> None:
    low = free_port()
    folder = tmp_path / "two"
    for role in ("Front", "Back"):
        (folder / role).mkdir(parents=True)
        (folder / role / "role.py").write_text("")
    (folder / "service.toml").write_text(
        TWO_ROLES.format(front=free_port(), back=free_port(), low=low, high=low + 20)
    )
    async with open_controller(state_dir, world) as ref:
        await create(ref, folder, configuration=CONFIG)
        v = await wait_view(ref, all_ready)
        http = next(e.port for e in v.endpoints if e.name == "Http")
        fronts = {i.id: int(i.endpoints["Http"].split(":")[1]) for i in v.instances if i.role == "Front"}
        async with echo_servers(fronts):
            await calls.synced()
            assert await answers(http) == {"Front_IN_0", "Front_IN_1", "Front_IN_2"}
            calls.clear()
            await change_status(world, "demo.demo-1.Front_IN_0", "BusyRole")
            await wait_view(ref, lambda v: any(i.status == "BusyRole" for i in v.instances))
            # One update of one backend, on the one balancer whose rotation changed: not the
            # Back role's, not the instances' own forwarders (their backend stands).
            assert calls == [("demo/Front/Http", "update", ("demo.demo-1.Front_IN_0",))]
            await calls.synced()
            assert await answers(http) == {"Front_IN_1", "Front_IN_2"}
            calls.clear()
            await change_status(world, "demo.demo-1.Front_IN_0", "ReadyRole")
            await wait_view(ref, all_ready)
            assert calls == [("demo/Front/Http", "update", ("demo.demo-1.Front_IN_0",))]
            await calls.synced()
            assert await answers(http) == {"Front_IN_0", "Front_IN_1", "Front_IN_2"}
            await change_status(world, "demo.demo-1.Front_IN_1", "StoppingRole")
            await wait_view(ref, lambda v: any(i.status == "StoppingRole" for i in v.instances))
            await calls.synced()
            assert await answers(http) == {"Front_IN_0", "Front_IN_2"}
