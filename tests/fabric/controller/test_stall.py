"""The controller does not blame hosts for its own stall: a blocked event loop, or one command
holding the mailbox the heartbeats wait in, gives every host a fresh grace period; no host is
declared dead and no instance moves. Nor while it is saturated (always a task to run: its
links read late), a silent host is declared dead only once the controller has read all it was
sent (on the autojump clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import trio
import trio.testing

from actors import Ref, open_system
from fabric.controller import FabricController, ask
from fabric.controller.messages import DeploymentView
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


@dataclass(frozen=True)
class Stall:
    """Block the controller's loop (``blocking``) or hold its mailbox for ``seconds``."""

    seconds: float
    blocking: bool


@dataclass(frozen=True)
class Saturate:
    """Keep the controller's loop busy for ``seconds`` (a task always ready to run), its
    mailbox handled meanwhile: as a backlog of short messages on its links would (for less
    than three failure timeouts: a host silent for that long is dead all the same)."""

    seconds: float


class StallingController(FabricController):
    """A controller with one handler that stalls, as a slow call in a real handler would."""

    clock: trio.testing.MockClock

    async def _spin(self, seconds: float) -> None:
        end = anyio.current_time() + seconds
        while anyio.current_time() < end:
            self.clock.jump(0.25)  # time passes while it runs (the mock clock jumps only when idle)
            await anyio.lowlevel.checkpoint()

    async def _dispatch(self, message: Any) -> Any:
        if isinstance(message, Saturate):
            self.start_soon(self._spin, message.seconds)
            return None
        if isinstance(message, Stall):
            if message.blocking:
                self.clock.jump(message.seconds)  # the loop runs nothing meanwhile
            else:
                await anyio.sleep(message.seconds)  # the mailbox is held meanwhile
            return None
        return await super()._dispatch(message)


async def stall_then_check(
    service: ServiceFactory, world: World, state_dir: Path, clock: trio.testing.MockClock, *, blocking: bool
) -> None:
    config = settings(host_failure_timeout=TIMEOUT, host_heartbeat_interval=5.0)

    def build() -> FabricController:
        controller = StallingController(state_dir, config, host_factory=world.factory())
        controller.clock = clock
        return controller

    async with open_system() as system:
        ref = await system.spawn(build, name="controller:local")
        await create(ref, service(), timeout=None)
        before = await wait_view(ref, all_ready)
        await ask(ref, Stall(seconds=3 * TIMEOUT, blocking=blocking), timeout=None)
        await anyio.sleep(TIMEOUT / 2)  # well inside the fresh grace period, past many watches
        after = await view(ref)
        assert all(h.alive for h in world.hosts.values())
        assert [(i.id, i.host, i.restarts) for i in after.instances] == [
            (i.id, i.host, i.restarts) for i in before.instances
        ]
        assert world.events("stop") == [] and world.events("restart") == []


async def test_a_blocked_event_loop_blames_no_host(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    await stall_then_check(service, world, state_dir, autojump_clock, blocking=True)


async def test_a_command_holding_the_mailbox_blames_no_host(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    await stall_then_check(service, world, state_dir, autojump_clock, blocking=False)


@asynccontextmanager
async def silent_host(
    service: ServiceFactory, world: World, state_dir: Path, clock: trio.testing.MockClock
) -> AsyncIterator[tuple[Ref, DeploymentView, str]]:
    """A controller that can be saturated, a deployment all Ready, and the host of its first
    instance gone silent (its heartbeats stop, or wait unread in a link): the controller's
    Ref, the view before, and that host."""
    config = settings(host_failure_timeout=TIMEOUT, host_heartbeat_interval=5.0)

    def build() -> FabricController:
        controller = StallingController(state_dir, config, host_factory=world.factory())
        controller.clock = clock
        return controller

    async with open_system() as system:
        ref = await system.spawn(build, name="controller:local")
        await create(ref, service(), timeout=None)
        before = await wait_view(ref, all_ready)
        victim = before.instances[0].host
        world.silent.add(victim)
        yield ref, before, victim


def moved_off(view: DeploymentView, host: str) -> bool:
    """No instance of the deployment is on ``host`` any more."""
    return all(i.host != host for i in view.instances)


async def test_a_saturated_controller_counts_silence_only_up_to_its_last_idle_moment(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with silent_host(service, world, state_dir, autojump_clock) as (ref, before, victim):
        await ask(ref, Saturate(seconds=2.5 * TIMEOUT), timeout=None)
        await anyio.sleep(2 * TIMEOUT)  # while the loop is busy (the spin jumps the clock)
        saturated_until = anyio.current_time()
        assert all(h.alive for h in world.hosts.values())  # not while the controller was saturated
        # the instances placed elsewhere, and the dead host's actor stopped (a moment after)
        moved = await wait_view(ref, lambda v: moved_off(v, victim) and not world.hosts[victim].alive)
        # Once idle, the silent host is declared dead (the others heartbeat: they stay).
        assert anyio.current_time() >= saturated_until
        assert not world.hosts[victim].alive
        assert sum(h.alive for h in world.hosts.values()) == len(world.hosts) - 1
        assert {i.id for i in moved.instances} == {i.id for i in before.instances}


async def test_a_controller_saturated_for_ever_still_declares_a_silent_host_dead(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with silent_host(service, world, state_dir, autojump_clock) as (ref, _, victim):
        silenced_at = anyio.current_time()
        await ask(ref, Saturate(seconds=10 * TIMEOUT), timeout=None)
        await wait_view(ref, lambda v: moved_off(v, victim) and not world.hosts[victim].alive)
        # Declared while the loop is still busy: after three timeouts of silence, not ten.
        assert 3 * TIMEOUT <= anyio.current_time() - silenced_at < 5 * TIMEOUT
        assert not world.hosts[victim].alive
