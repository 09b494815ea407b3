from __future__ import annotations

from pathlib import Path

from controller_kit import ServiceFactory, all_ready, create, open_controller, wait_view
from controller_standin import World


async def test_smoke(service: ServiceFactory, world: World, state_dir: Path) -> None:
    folder = service()
    async with open_controller(state_dir, world) as ref:
        op = await create(ref, folder)
        print(op)
        assert op.status == "Succeeded", op
        v = await wait_view(ref, all_ready, timeout=10)
        print(v)
