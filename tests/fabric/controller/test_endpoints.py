"""Instance input endpoints (a public port per instance) and load balancer probes taken from
the definition."""

from __future__ import annotations

from pathlib import Path

from fabric.controller.model import Instance
from fabric.controller.rotation import probe_port, probe_spec
from fabric.model.definition import (
    InputEndpoint,
    InternalEndpoint,
    LoadBalancerProbe,
    RoleDefinition,
    ServiceDefinition,
)
from fabric.network import ProbeSpec
from tests.fabric.controller.controller_kit import (
    all_ready,
    create,
    echo_servers,
    fetch,
    free_port,
    open_controller,
    wait_view,
)
from tests.fabric.controller.controller_standin import World

GAME = """
name = "Demo"

[[roles]]
name = "Game"
kind = "worker"
vm_size = "Small"

[[roles.instance_input_endpoints]]
name = "Debug"
protocol = "tcp"
local_port = 2222

[roles.instance_input_endpoints.allocate_public_port_from]
min = {low}
max = {high}
"""

GAME_CONFIG = b"""
service_name = "Demo"

[[roles]]
name = "Game"
instances = 3
"""


async def test_each_instance_gets_its_own_public_port_from_the_range(
    tmp_path: Path, world: World, state_dir: Path
) -> None:
    low = free_port()
    folder = tmp_path / "game"
    (folder / "Game").mkdir(parents=True)
    (folder / "Game" / "game.py").write_text("")
    (folder / "service.toml").write_text(GAME.format(low=low, high=low + 20))
    async with open_controller(state_dir, world) as ref:
        await create(ref, folder, configuration=GAME_CONFIG)
        v = await wait_view(ref, all_ready)
        public = {e.name: e.port for e in v.endpoints}
        assert set(public) == {"Debug.Game_IN_0", "Debug.Game_IN_1", "Debug.Game_IN_2"}
        assert all(low <= p <= low + 20 for p in public.values()) and len(set(public.values())) == 3
        local = {i.id: int(i.endpoints["Debug"].split(":")[1]) for i in v.instances}
        async with echo_servers(local):
            for iid in local:
                # Each instance's port reaches that instance only, whatever the others do.
                assert {await fetch(public[f"Debug.{iid}"]) for _ in range(3)} == {iid}


def test_a_probe_is_taken_from_the_definition_and_aimed_at_each_instance() -> None:
    http = InputEndpoint(name="Http", protocol="http", port=80, load_balancer_probe="Health")
    game = InputEndpoint(
        name="Game", protocol="tcp", port=9000, local_port="*", load_balancer_probe="OnGossip"
    )
    gossip = InternalEndpoint(name="Gossip", protocol="tcp", port=7000)
    role = RoleDefinition(name="R", kind="worker", input_endpoints=(http, game), internal_endpoints=(gossip,))
    definition = ServiceDefinition(
        name="S",
        roles=(role,),
        load_balancer_probes=(
            LoadBalancerProbe(
                name="Health", protocol="http", path="/health", interval_in_seconds=5, timeout_in_seconds=11
            ),
            LoadBalancerProbe(name="OnGossip", protocol="tcp", port=7000),
        ),
    )
    assert probe_spec(definition, http) == ProbeSpec(
        protocol="http", port=0, path="/health", interval=5.0, timeout=11.0
    )
    assert probe_spec(definition, game) == ProbeSpec(
        protocol="tcp", port=0, path="/", interval=15.0, timeout=31.0
    )
    inst = Instance(
        vm="v", deployment_id="d", role="R", index=0, ports={"Http": 4001, "Game": 4002, "Gossip": 4003}
    )
    # No port: the backend's own; a port naming another endpoint: that endpoint's local port.
    assert probe_port(definition, role, http, inst) is None
    assert probe_port(definition, role, game, inst) == 4003
