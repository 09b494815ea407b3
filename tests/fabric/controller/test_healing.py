"""Service healing: a host that goes silent is declared dead after host_failure_timeout, its
process is stopped, and its instances start on other hosts (on the autojump clock)."""

from __future__ import annotations

from pathlib import Path

import anyio
import trio

from fabric.controller.store import Store
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    create,
    open_controller,
    settings,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World

VM = "demo.demo-1.{}"


async def test_a_silent_host_is_declared_dead_and_its_instances_move(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.abc.Clock
) -> None:
    config = settings(host_failure_timeout=60.0, host_heartbeat_interval=5.0)
    async with open_controller(state_dir, world, config) as ref:
        await create(ref, service(), timeout=None)
        before = await wait_view(ref, all_ready)
        victim = next(i for i in before.instances if i.id == "Front_IN_1")
        moved = {i.id for i in before.instances if i.host == victim.host}
        world.silent.add(victim.host)  # hung: no heartbeats, no pushes
        silenced_at = anyio.current_time()
        await wait_view(
            ref, lambda v: any(i.id == "Front_IN_1" and i.host != victim.host for i in v.instances)
        )
        # Not before host_failure_timeout of silence (a late heartbeat is not a death).
        assert anyio.current_time() - silenced_at >= 60.0
        after = await wait_view(ref, all_ready)
        assert not world.hosts[victim.host].alive  # the hung host was stopped
        by_id = {i.id: i for i in after.instances}
        for iid in moved:
            assert by_id[iid].host != victim.host
            assert by_id[iid].restarts == 1
        # Same ports and domains; the rest did not move.
        for i in before.instances:
            assert by_id[i.id].endpoints == i.endpoints and by_id[i.id].update_domain == i.update_domain
            if i.id not in moved:
                assert by_id[i.id].host == i.host
        assert after.endpoints == before.endpoints
        store = Store(state_dir / "fabric.db", "local")
        assert victim.host not in {h.id for h in store.hosts()}
        assert {r.host_id for r in store.instances(after.id)} == {i.host for i in after.instances}
        store.close()


async def test_a_heartbeating_host_is_never_declared_dead(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_controller(state_dir, world, settings(host_failure_timeout=60.0)) as ref:
        await create(ref, service(), timeout=None)
        before = await wait_view(ref, all_ready)
        await anyio.sleep(600)  # ten minutes of heartbeats
        assert await view(ref) == before
        assert all(h.alive for h in world.hosts.values())
