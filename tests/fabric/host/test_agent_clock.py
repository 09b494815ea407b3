"""The host agent with in-process stand-in guests on trio's autojump clock: Azure's timings at
full length (2.5 s heartbeats, the 10-minute watchdog, 5 s host heartbeats) in milliseconds."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import anyio
import pytest
import trio
import trio.testing

from actors import ActorError, Ref, open_system
from fabric.guest.messages import ApplyEnvironment, GuestConfig
from fabric.host.agent import HostAgent, host_log_path
from fabric.host.messages import (
    ApplyGuestEnvironment,
    GetHostStatus,
    GuestLinkApplied,
    GuestLinkFault,
    GuestLinkUnavailable,
    HostHeartbeat,
    RestartGuest,
    StartGuest,
    StopGuest,
)
from fabric.host.reports import HOLD_SECONDS
from fabric.settings import Settings
from tests.fabric.host.host_stand_ins import (
    ControllerStandIn,
    FakeLauncher,
    SpawnHost,
    guest_config,
    host_config,
    replace,
)

pytestmark = pytest.mark.timeout(20)

AZURE = Settings()


@dataclass
class Host:
    """A host agent in this process, its recording parent, and its stand-in guests."""

    ref: Ref
    controller: ControllerStandIn
    launcher: FakeLauncher
    config: GuestConfig
    log: Path


@asynccontextmanager
async def host(tmp_path: Path, settings: Settings = AZURE) -> AsyncIterator[Host]:
    """A HostAgent whose VMs are FakeGuests in this process."""
    controller, launcher = ControllerStandIn(), FakeLauncher()
    config = host_config(tmp_path, settings)
    async with open_system() as system:
        parent = await system.spawn(lambda: controller, name="controller")
        ref = await parent.ask(SpawnHost(factory=lambda: HostAgent(config, launcher=launcher)))
        yield Host(ref, controller, launcher, guest_config(tmp_path, settings), host_log_path(config))
        await ref.stop()


async def test_start_reports_creating_and_starting_vm_then_relays_the_guest(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with host(tmp_path) as h:
        pid = await h.ref.ask(StartGuest(h.config))
        assert pid > 0
        await h.controller.wait_for("ReadyRole", 10)
        assert h.controller.seen() == ["CreatingVM", "StartingVM", "StartingRole", "ReadyRole"]
        status: HostHeartbeat = await h.ref.ask(GetHostStatus())
        assert status.instances["Worker_IN_0"].status == "ReadyRole"
        assert status.host_id == "h1"


async def test_a_hung_guest_goes_unknown_then_is_restarted_after_ten_minutes(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with host(tmp_path) as h:
        await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 10)
        first = h.launcher.current
        await anyio.sleep(60)
        first.muted = True
        hung_at = anyio.current_time()
        await h.controller.wait_for("ReadyRole", 700, count=2)
        seen = h.controller.seen()
        assert seen[4:] == ["RoleStateUnknown", "StoppedVM", "StartingVM", "StartingRole", "ReadyRole"]
        # the last status is shown as is for a few heartbeats, then as unknown
        unknown = h.controller.at("RoleStateUnknown") - hung_at
        assert 7.5 <= unknown <= 12.5
        # the restart: ten minutes after the last reply, not before (and within one heartbeat)
        restarted = h.controller.at("StoppedVM") - first.last_answer
        assert 600.0 <= restarted < 602.5
        assert len(h.launcher.boots) == 2
        assert h.launcher.boots[1] - first.last_answer == pytest.approx(restarted, abs=0.01)
        assert h.launcher.current is not first
        log = h.log.read_text()
        assert "watchdog: no heartbeat reply from Worker_IN_0" in log
        assert "restarting the guest OS" in log
        assert "its state is unknown" in log


@pytest.mark.parametrize("paused_in", ["a heartbeat", "the wait for the next heartbeat"])
async def test_a_host_agent_paused_past_the_timeout_does_not_restart_its_guest(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, paused_in: str
) -> None:
    # As after SIGSTOP/SIGCONT (or a starved loop): every deadline of the host agent passes at
    # once, and its guest, paused too or catching up, is slow to answer again. The silence the
    # host agent could not hear is not the guest's: no restart; a guest that then hangs for good
    # is still restarted, ten minutes after its last reply.
    async with host(tmp_path) as h:
        await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 10)
        guest = h.launcher.current
        now, interval = anyio.current_time(), AZURE.guest_heartbeat_interval
        tick = (math.floor(now / interval) + 1) * interval  # heartbeats go out on multiples
        guest.muted = True
        await anyio.sleep(tick - now + (0.1 if paused_in == "a heartbeat" else -0.1))
        autojump_clock.jump(AZURE.guest_heartbeat_timeout + 60)
        await anyio.sleep(30)  # twelve heartbeats unanswered after the pause
        guest.muted = False
        await anyio.sleep(3600)
        assert h.launcher.current is guest and len(h.launcher.boots) == 1
        assert h.controller.seen()[4:] == ["RoleStateUnknown", "ReadyRole"]
        guest.muted = True
        await h.controller.wait_for("StoppedVM", 700)
        assert 600.0 <= h.controller.at("StoppedVM") - guest.last_answer < 602.5


async def test_a_guest_answering_every_heartbeat_runs_for_hours(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with host(tmp_path) as h:
        await h.ref.ask(StartGuest(h.config))
        await anyio.sleep(4 * 3600)
        assert h.controller.seen() == ["CreatingVM", "StartingVM", "StartingRole", "ReadyRole"]
        assert len(h.launcher.boots) == 1
        assert h.launcher.current.heartbeats == pytest.approx(4 * 3600 / 2.5, abs=2)


async def test_a_lost_push_is_corrected_by_the_next_heartbeat(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with host(tmp_path) as h:
        await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 10)
        changed = anyio.current_time()
        await h.launcher.current.set_status("BusyRole", push=False)
        await h.controller.wait_for("BusyRole", 10)
        assert h.controller.at("BusyRole") - changed <= 2.5


async def test_a_crashed_guest_is_rebooted_with_a_growing_backoff(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with host(tmp_path) as h:
        await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 10)
        h.launcher.crash_at_once = True  # from now on every boot crashes at once
        h.launcher.current.crash.set()
        await h.controller.wait_until(lambda: len(h.launcher.boots) >= 6, 120)
        gaps = [round(b - a, 3) for a, b in pairwise(h.launcher.boots[1:])]
        # role_restart_initial 0.5 s, doubling: the VM does not spin
        assert gaps == [1.0, 2.0, 4.0, 8.0]
        assert h.launcher.boots[1] - h.controller.at("StoppedVM") == pytest.approx(0.5, abs=0.01)
        stopped = [m.status.detail for _, m in h.controller.statuses if m.status.status == "StoppedVM"]
        assert stopped[0] == "the guest OS went down (RuntimeError: the guest crashed); rebooting in 0.5 s"
        assert "the guest OS of Worker_IN_0 went down" in h.log.read_text()
        # a guest that stays up for role_restart_reset seconds counts as healthy again
        h.launcher.crash_at_once = False
        await h.controller.wait_until(lambda: h.controller.seen()[-1] == "ReadyRole", 120)
        await anyio.sleep(AZURE.role_restart_reset)
        before = len(h.launcher.boots)
        h.launcher.current.crash.set()
        await h.controller.wait_until(lambda: len(h.launcher.boots) > before, 10)
        assert h.launcher.boots[-1] - h.controller.at("StoppedVM", nth=-1) == pytest.approx(0.5, abs=0.01)


async def test_a_vm_that_cannot_boot_fails_the_start(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with host(tmp_path) as h:
        h.launcher.refuse = True
        with pytest.raises(ActorError) as caught:
            await h.ref.ask(StartGuest(h.config))
        assert caught.value.type_name == "fabric.host.guests.GuestBootError"
        assert "could not boot" in caught.value.message
        await h.controller.wait_for("FailedStartingVM", 10)
        assert h.controller.seen() == ["CreatingVM", "StartingVM", "FailedStartingVM"]
        status: HostHeartbeat = await h.ref.ask(GetHostStatus())
        assert status.instances == {}


async def test_stop_restart_and_apply(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with host(tmp_path) as h:
        await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 10)
        change = ApplyEnvironment(environment=h.config.environment, changes=[])
        assert await h.ref.ask(ApplyGuestEnvironment(instance_id="Worker_IN_0", change=change)) == "applied"
        await h.ref.ask(RestartGuest(instance_id="Worker_IN_0"))
        await h.controller.wait_for("ReadyRole", 10, count=2)
        assert len(h.launcher.boots) == 2
        await h.ref.ask(StopGuest(instance_id="Worker_IN_0"))
        await h.controller.wait_for("StoppedVM", 10, count=2)
        assert h.controller.seen()[-2:] == ["StoppingVM", "StoppedVM"]
        assert (await h.ref.ask(GetHostStatus())).instances == {}
        await h.ref.ask(StopGuest(instance_id="Worker_IN_0"))  # stopping twice is harmless
        with pytest.raises(ActorError, match="runs no instance 'Worker_IN_0'"):
            await h.ref.ask(RestartGuest(instance_id="Worker_IN_0"))
        # nothing more happens to a stopped guest, however long we wait
        await anyio.sleep(3600)
        assert len(h.launcher.boots) == 2


async def test_a_guest_link_fault_needs_a_vm_process_here(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A link fault is refused with GuestLinkUnavailable (so the chaos agent refuses it in one
    line) when no VM process of that instance runs here: none at all, or one with no process
    link (these in-process stand-ins); clearing such a link is a harmless no-op."""
    async with host(tmp_path) as h:
        await h.ref.ask(StartGuest(h.config))
        for instance in ("Worker_IN_9", "Worker_IN_0"):
            with pytest.raises(ActorError) as caught:
                await h.ref.ask(GuestLinkFault(instance_id=instance, action="cut"))
            refusal = caught.value.caused_by(GuestLinkUnavailable)
            assert refusal is not None
            assert (
                str(refusal) == f"the VM of {instance} does not run on this host now; try again once it is up"
            )
            cleared = await h.ref.ask(GuestLinkFault(instance_id=instance, action="clear"))
            assert cleared == GuestLinkApplied(instance_id=instance, pid=0)


async def test_host_heartbeats_the_controller_every_interval(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with host(tmp_path) as h:
        start = h.controller.heartbeats[0][0] if h.controller.heartbeats else anyio.current_time()
        await h.ref.ask(StartGuest(h.config))
        await anyio.sleep(61)
        beats = h.controller.heartbeats
        times = [t for t, _ in beats]
        assert times[0] == pytest.approx(start, abs=0.01)
        assert {round(b - a, 6) for a, b in pairwise(times)} == {5.0}
        assert len(beats) == 13
        assert beats[-1][1].instances["Worker_IN_0"].status == "ReadyRole"
        assert beats[-1][1].pid > 0


async def test_the_steps_of_a_boot_go_together_and_the_rest_at_once(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A boot's steps (out of rotation all along) wait up to HOLD_SECONDS to go in one
    InstanceStatusesChanged; ReadyRole, a step of an instance that was up, and the answer to
    GetHostStatus are never behind them."""
    async with host(tmp_path) as h:
        asked = anyio.current_time()
        await h.ref.ask(StartGuest(h.config))
        await h.controller.wait_for("ReadyRole", 10)
        assert h.controller.seen() == ["CreatingVM", "StartingVM", "StartingRole", "ReadyRole"]
        [(sent, batch)] = h.controller.batches
        assert [c.status.status for c in batch.changes] == ["CreatingVM", "StartingVM", "StartingRole"]
        assert batch.host_id == "h1" and {c.instance_id for c in batch.changes} == {"Worker_IN_0"}
        assert sent - asked == pytest.approx(HOLD_SECONDS, abs=0.01)
        guest = h.launcher.current
        assert h.controller.at("ReadyRole") == pytest.approx(guest.status.at, abs=0.001)

        # The role recycles: leaving ReadyRole goes at once.
        recycled = anyio.current_time()
        await guest.set_status("StartingRole")
        await h.controller.wait_for("StartingRole", 10, count=2)
        assert h.controller.at("StartingRole", nth=1) - recycled < 0.001

        # A second instance boots; a status asked for meanwhile comes after its held steps.
        mark = h.controller.mark()
        second = replace(h.config, instance_id="Worker_IN_1", vm_root=str(tmp_path / "vms" / "Worker_IN_1"))
        await h.ref.ask(StartGuest(second))
        status: HostHeartbeat = await h.ref.ask(GetHostStatus())
        assert status.instances["Worker_IN_1"].status == "StartingRole"
        await h.controller.wait_for("StartingRole", 0.01, instance_id="Worker_IN_1", since=mark)
        assert h.controller.seen("Worker_IN_1", since=mark) == ["CreatingVM", "StartingVM", "StartingRole"]


def test_the_same_restart_on_asyncio(tmp_path: Path) -> None:
    """The host agent uses only anyio: the watchdog works on asyncio too (real time, short)."""
    settings = Settings.fast(guest_heartbeat_interval=0.05, guest_heartbeat_timeout=0.5)

    async def main() -> None:
        async with host(tmp_path, settings) as h:
            await h.ref.ask(StartGuest(h.config))
            await h.controller.wait_for("ReadyRole", 5)
            h.launcher.current.muted = True
            await h.controller.wait_for("ReadyRole", 5, count=2)
            assert h.controller.seen()[4:7] == ["RoleStateUnknown", "StoppedVM", "StartingVM"]

    anyio.run(main, backend="asyncio")
