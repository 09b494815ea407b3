"""The topology a guest boots with: which roles' instances it lists, and when it is rebuilt."""

from __future__ import annotations

from pathlib import Path

from tests.fabric.controller.controller_kit import all_ready, create, open_controller, wait_view
from tests.fabric.controller.controller_standin import World

DEFINITION = """
name = "Demo"

[[roles]]
name = "Front"
kind = "worker"
vm_size = "Small"

[[roles.internal_endpoints]]
name = "Control"
protocol = "tcp"

[[roles]]
name = "Quiet"
kind = "worker"
vm_size = "Small"
"""

CONFIG = """
service_name = "Demo"

[[roles]]
name = "Front"
instances = 2

[[roles]]
name = "Quiet"
instances = 2
"""


async def test_instances_of_a_role_without_internal_endpoints_are_not_listed(
    tmp_path: Path, world: World, state_dir: Path
) -> None:
    # As in Azure: a role's instances are known at runtime only when it has an internal
    # endpoint; the role itself is still listed, and each guest knows its own instance.
    folder = tmp_path / "svc"
    for role in ("Front", "Quiet"):
        (folder / role).mkdir(parents=True)
        (folder / role / "role.py").write_text("VERSION = 'v1'\n")
    (folder / "service.toml").write_text(DEFINITION)
    (folder / "config.toml").write_text(CONFIG)
    async with open_controller(state_dir, world) as ref:
        await create(ref, folder, configuration=CONFIG.encode())
        await wait_view(ref, all_ready)
    for vm in ("demo.demo-1.Front_IN_0", "demo.demo-1.Quiet_IN_1"):
        env = world.booted[vm].environment
        assert {r: [i.id for i in insts] for r, insts in env.roles.items()} == {
            "Front": ["Front_IN_0", "Front_IN_1"],
            "Quiet": [],
        }
    assert world.booted["demo.demo-1.Quiet_IN_1"].environment.current_instance.id == "Quiet_IN_1"
