"""A fabric process for the SIGKILL test: a controller with stand-in hosts and two deployments,
one in the middle of a Manual upgrade walk. Prints a JSON line once there, then waits to be
killed. Usage: python -m tests.fabric.controller.controller_child STATE_DIR SERVICE_V1 SERVICE_V2"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import msgspec

from fabric.controller import ask, wait_operation
from fabric.controller.messages import UpgradeDeployment, WalkUpgradeDomain
from tests.fabric.controller.controller_kit import all_ready, create, open_controller, view, wait_view
from tests.fabric.controller.controller_standin import World


async def main(state_dir: str, v1: str, v2: str) -> None:
    world = World()
    async with open_controller(Path(state_dir), world) as ref:
        await create(ref, Path(v1))
        await wait_view(ref, all_ready)
        await create(ref, Path(v1), slot="staging", name="demo-2", start=False)
        accepted = await ask(
            ref, UpgradeDeployment(service="demo", slot="production", package_path=v2, mode="Manual")
        )
        await wait_operation(ref, accepted.request_id)
        world.hold["demo.demo-1.Back_IN_0"] = anyio.Event()  # the walk never finishes here
        walking = await ask(ref, WalkUpgradeDomain(service="demo", slot="production", upgrade_domain=0))
        await wait_view(
            ref, lambda v: any(i.id == "Back_IN_0" and i.status == "StartingRole" for i in v.instances)
        )
        before = await view(ref)
        line = {"walk": walking.request_id, "production": msgspec.to_builtins(before)}
        print(msgspec.json.encode(line).decode(), flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4], backend="trio")
