"""Heartbeats are stamped as they arrive: a controller working through a long backlog of
short messages (each well under the watch period, so none counts as a stall) does not declare
dead the hosts whose heartbeats waited in that backlog, nor those whose heartbeats waited to
enter a full mailbox (on the autojump clock)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import trio.testing

from actors import open_system
from fabric.controller import FabricController, ask
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    create,
    settings,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World

TIMEOUT = 60.0
HEARTBEAT = 5.0


@dataclass(frozen=True)
class Chore:
    """A message that takes ``seconds`` to handle (the controller awaits meanwhile)."""

    seconds: float


class BusyController(FabricController):
    """A controller with one kind of slow but not stalling message."""

    async def _dispatch(self, message: Any) -> Any:
        if isinstance(message, Chore):
            await anyio.sleep(message.seconds)
            return None
        return await super()._dispatch(message)


async def backlog_then_check(
    service: ServiceFactory, world: World, state_dir: Path, *, mailbox_size: int
) -> None:
    config = settings(host_failure_timeout=TIMEOUT, host_heartbeat_interval=HEARTBEAT)
    async with open_system() as system:
        ref = await system.spawn(
            lambda: BusyController(state_dir, config, host_factory=world.factory()),
            name="controller:local",
            mailbox_size=mailbox_size,
        )
        await create(ref, service(), timeout=None)
        before = await wait_view(ref, all_ready)
        # 40 chores of 0.8 watch periods each: 160 s of backlog, each heartbeat waits behind
        # up to all of it (or for room in the mailbox), while every host beats every 5 s.
        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(ref.tell, Chore(0.8 * HEARTBEAT))
        await ask(ref, Chore(0.0), timeout=None)  # once the backlog is through
        after = await view(ref)
        assert all(h.alive for h in world.hosts.values())
        assert [(i.id, i.host, i.restarts) for i in after.instances] == [
            (i.id, i.host, i.restarts) for i in before.instances
        ]
        assert world.events("stop") == [] and world.events("restart") == []


async def test_hosts_heard_on_time_behind_a_long_backlog_stay_alive(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    await backlog_then_check(service, world, state_dir, mailbox_size=1000)


async def test_hosts_waiting_to_enter_a_full_mailbox_stay_alive(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    await backlog_then_check(service, world, state_dir, mailbox_size=4)
