"""Role host start counts reach the store in batches (one transaction for the starts reported
meanwhile, not one per start: the store's largest cost at scale) and still survive a restart of
the controller (a guard for the batching: the count was stored at once before)."""

from __future__ import annotations

from pathlib import Path

from fabric.controller import ask, wait_operation
from fabric.controller.messages import InstanceAction
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    config,
    create,
    open_controller,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World


async def test_restarts_are_stored_and_survive_a_controller_restart(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    counts = {f"Front_IN_{n}": 1 if n < 2 else 0 for n in range(12)}
    async with open_controller(state_dir, world) as ref:
        await create(ref, service(), configuration=config(front=12))
        await wait_view(ref, all_ready)
        for iid in ("Front_IN_0", "Front_IN_1"):
            accepted = await ask(
                ref, InstanceAction(service="demo", slot="production", instance_id=iid, action="reboot")
            )
            await wait_operation(ref, accepted.request_id)
        assert {i.id: i.restarts for i in (await view(ref)).instances if i.role == "Front"} == counts
    async with open_controller(state_dir, World()) as ref:
        again = await view(ref)
    assert {i.id: i.restarts for i in again.instances if i.role == "Front"} == counts
