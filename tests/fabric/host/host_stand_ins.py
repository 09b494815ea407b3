"""Stand-ins for the host agent tests: a recording controller, guests that run in-process (for
trio's autojump clock), and a guest agent that skips the role (for quick real VMs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors import Actor, Ref
from fabric.guest.agent import GuestAgent
from fabric.guest.messages import (
    ApplyEnvironment,
    GuestConfig,
    GuestStatus,
    Heartbeat,
    HeartbeatReply,
    InstanceStatus,
)
from fabric.host.messages import HostConfig, HostHeartbeat, InstanceStatusChanged, InstanceStatusesChanged
from fabric.model.definition import RoleDefinition
from fabric.settings import Settings
from roles.protocol import InstanceInfo, RoleEnvironmentData


def guest_config(
    state_dir: Path,
    settings: Settings,
    *,
    index: int = 0,
    agent: str = "tests.fabric.host.host_stand_ins:StandInAgent",
) -> GuestConfig:
    """The GuestConfig of a worker instance with no code (the stand-in agent runs no role)."""
    instance = f"Worker_IN_{index}"
    code = state_dir / "code"
    code.mkdir(parents=True, exist_ok=True)
    return GuestConfig(
        vm_root=str(state_dir / "vms" / instance),
        deployment_id="d0",
        instance_id=instance,
        role=RoleDefinition(name="Worker", kind="worker"),
        role_code_dir=str(code),
        environment=RoleEnvironmentData(
            deployment_id="d0",
            current_instance=InstanceInfo(id=instance, role_name="Worker", update_domain=0, fault_domain=0),
        ),
        settings=settings,
        agent=agent,
    )


def host_config(state_dir: Path, settings: Settings) -> HostConfig:
    """A host of 4 cores in ``state_dir``."""
    return HostConfig(host_id="h1", cores=4, state_dir=str(state_dir), settings=settings)


class SpawnHost(msgspec.Struct, frozen=True):
    """Ask the controller stand-in to start a host agent as its child: in-process (``factory``)
    or as a process actor (``config``); answers its Ref."""

    factory: Any = None
    config: HostConfig | None = None
    options: Any = None


class ControllerStandIn(Actor):
    """The host agent's parent: records every status change and host heartbeat with its time
    (the changes of an InstanceStatusesChanged one by one, at its arrival)."""

    def __init__(self) -> None:
        self.statuses: list[tuple[float, InstanceStatusChanged]] = []
        self.heartbeats: list[tuple[float, HostHeartbeat]] = []
        #: the InstanceStatusesChanged among them (each of its changes is in ``statuses`` too)
        self.batches: list[tuple[float, InstanceStatusesChanged]] = []
        self.changed = anyio.Event()

    async def receive(self, message: Any) -> Any:
        now = anyio.current_time()
        if isinstance(message, InstanceStatusChanged):
            self.statuses.append((now, message))
        elif isinstance(message, InstanceStatusesChanged):  # a boot's steps, sent together
            self.batches.append((now, message))
            for c in message.changes:
                one = InstanceStatusChanged(
                    host_id=message.host_id, instance_id=c.instance_id, status=c.status, uid=c.uid
                )
                self.statuses.append((now, one))
        elif isinstance(message, HostHeartbeat):
            self.heartbeats.append((now, message))
        elif isinstance(message, SpawnHost):
            if message.factory is not None:
                return await self.spawn(message.factory, name="host")
            return await self.spawn_process(
                "fabric.host.agent:HostAgent", name="host", args=(message.config,), options=message.options
            )
        else:
            return await super().receive(message)
        self.changed.set()
        self.changed = anyio.Event()
        return None

    def mark(self) -> int:
        """A bookmark in the record of status changes, for ``since=``."""
        return len(self.statuses)

    def seen(self, instance_id: str = "Worker_IN_0", since: int = 0) -> list[str]:
        """The statuses reported for an instance, in order (from bookmark ``since``)."""
        return [m.status.status for _, m in self.statuses[since:] if m.instance_id == instance_id]

    def at(self, status: str, instance_id: str = "Worker_IN_0", nth: int = 0, since: int = 0) -> float:
        """When the nth report of ``status`` arrived (from bookmark ``since``)."""
        times = [
            t for t, m in self.statuses[since:] if m.instance_id == instance_id and m.status.status == status
        ]
        return times[nth]

    async def wait_until(self, predicate: Callable[[], bool], seconds: float) -> None:
        """Wait until ``predicate()`` holds after some message, or fail after ``seconds``."""
        with anyio.fail_after(seconds):
            while not predicate():
                await self.changed.wait()

    async def wait_for(
        self, status: str, seconds: float, instance_id: str = "Worker_IN_0", count: int = 1, since: int = 0
    ) -> None:
        """Wait until ``status`` was reported ``count`` times for the instance (after ``since``)."""
        await self.wait_until(lambda: self.seen(instance_id, since).count(status) >= count, seconds)


# -- a real VM quickly: the real AppAgent with a guest agent that runs no role -------------------


class StandInAgent(GuestAgent):
    """A guest agent that skips provisioning and the bootstrapper: it reports the role Ready at
    once, answers heartbeats, and applies any environment."""

    async def on_start(self) -> None:
        self.start_soon(self._come_up)

    async def _come_up(self) -> None:
        await self._on_status(
            InstanceStatus(status="StartingRole", detail=f"pid {os.getpid()}", at=anyio.current_time())
        )
        await self._on_status(InstanceStatus(status="ReadyRole", at=anyio.current_time()))

    async def receive(self, message: Any) -> Any:
        if isinstance(message, ApplyEnvironment):
            self.runtime_log.write(f"applied {len(message.changes)} changes")
            return "applied"
        return await super().receive(message)


# -- guests inside the test process, for the autojump clock -------------------------------------


class FakeGuest(Actor):
    """A guest that answers heartbeats (or not), pushes status to its port, and can crash."""

    def __init__(self, config: GuestConfig, port: Ref, *, crash_at_once: bool = False) -> None:
        self.config = config
        self.port = port
        self.interval = config.settings.guest_heartbeat_interval
        self.status = InstanceStatus(status="CreatingRole")
        self.muted = False
        self.killed = anyio.Event()
        self.crash = anyio.Event()
        self.heartbeats = 0
        #: when the last heartbeat was answered at once
        self.last_answer = 0.0
        if crash_at_once:
            self.crash.set()

    async def on_start(self) -> None:
        self.start_soon(self._life)

    async def _life(self) -> None:
        await self.set_status("StartingRole")
        if self.crash.is_set():
            raise RuntimeError("the guest crashed while starting")
        await anyio.sleep(0.4 * self.interval)  # 1 s with Azure's 2.5 s heartbeats
        await self.set_status("ReadyRole")
        await self.crash.wait()
        raise RuntimeError("the guest crashed")

    async def set_status(self, status: Any, *, push: bool = True) -> None:
        """Change the status; ``push=False`` plays a push that was lost on the way."""
        self.status = InstanceStatus(status=status, at=anyio.current_time())
        if push:
            await self.port.tell(GuestStatus(instance_id=self.config.instance_id, status=self.status))

    async def receive(self, message: Any) -> Any:
        match message:
            case Heartbeat(seq=seq):
                if self.muted:
                    # Hung: answer far too late (the asker has given up) unless killed first.
                    with anyio.move_on_after(2 * self.interval):
                        await self.killed.wait()
                else:
                    self.last_answer = anyio.current_time()
                self.heartbeats += 1
                return HeartbeatReply(seq=seq, instance_id=self.config.instance_id, status=self.status)
            case ApplyEnvironment():
                return "applied"
        return await super().receive(message)


class FakeLauncher:
    """Launches FakeGuests as in-process children of the host agent; records every boot."""

    def __init__(self) -> None:
        self.guests: list[FakeGuest] = []
        self.boots: list[float] = []
        self.crash_at_once = False
        self.refuse = False

    @property
    def current(self) -> FakeGuest:
        """The latest incarnation."""
        return self.guests[-1]

    async def launch(self, host: Actor, config: GuestConfig, *, name: str, port: Ref) -> Ref:
        self.boots.append(anyio.current_time())
        if self.refuse:
            raise OSError("no such interpreter")
        guest = FakeGuest(config, port, crash_at_once=self.crash_at_once)
        self.guests.append(guest)
        return await host.spawn(lambda: guest, name=name)

    async def kill(self, vm: Ref) -> None:
        for guest in self.guests:
            guest.killed.set()
        await vm.stop()


def replace(config: GuestConfig, **changes: Any) -> GuestConfig:
    """A copy of a config with some fields changed."""
    return msgspec.structs.replace(config, **changes)
