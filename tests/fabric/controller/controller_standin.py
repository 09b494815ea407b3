"""In-process stand-ins for host agents, driven by a shared World the test inspects and steers.

A stand-in host speaks fabric.host.messages like the real HostAgent: it "boots" a guest by
pushing CreatingVM, StartingVM, CreatingRole, StartingRole and ReadyRole, heartbeats the
controller every host_heartbeat_interval, and answers stop/restart/apply. The World records
every request (in order) and lets a test hold an instance before Ready, fail it, or silence a
host, all on the autojump clock when the test asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from actors import Actor, Ref
from fabric.controller.hosts import HostFactory
from fabric.guest.messages import GuestConfig, InstanceStatus
from fabric.host.agent import UnknownInstance
from fabric.host.guests import GuestBootError
from fabric.host.messages import (
    ApplyGuestEnvironment,
    GetHostStatus,
    HostConfig,
    HostHeartbeat,
    InstanceStatusChanged,
    RestartGuest,
    StartedGuests,
    StartGuest,
    StartGuests,
    StartOutcome,
    StopGuest,
)
from fabric.model.status import RoleStatus


@dataclass
class World:
    """Shared state of every stand-in host of a test."""

    hosts: dict[str, StandInHost] = field(default_factory=dict)
    configs: dict[str, HostConfig] = field(default_factory=dict)
    #: (what, vm, host id, detail) in the order the hosts saw the requests
    log: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: host ids that stopped heartbeating (a hung host)
    silent: set[str] = field(default_factory=set)
    #: vm -> an event the guest waits for before it reports ReadyRole
    hold: dict[str, anyio.Event] = field(default_factory=dict)
    #: vm -> the status its role ends in instead of ReadyRole
    outcome: dict[str, RoleStatus] = field(default_factory=dict)
    #: virtual seconds between boot statuses
    boot_step: float = 0.0
    #: what ApplyGuestEnvironment answers
    apply_answer: str = "applied"
    #: vm -> every (changes, environment) applied to it
    applied: dict[str, list[Any]] = field(default_factory=dict)
    #: vm -> the config it last booted with
    booted: dict[str, GuestConfig] = field(default_factory=dict)
    #: vm -> why its host refuses to boot it (StartGuest raises, as a host whose VM fails to)
    refuse: dict[str, str] = field(default_factory=dict)
    #: the VMs of each StartGuest or StartGuests ask, in order (one round trip each)
    start_asks: list[list[str]] = field(default_factory=list)

    def factory(self) -> HostFactory:
        """The HostFactory that builds stand-ins in the controller's process."""

        async def make(controller: Actor, config: HostConfig) -> Ref:
            self.configs[config.host_id] = config
            return await controller.spawn(lambda: StandInHost(config, self), name=f"host:{config.host_id}")

        return make

    def events(self, what: str) -> list[str]:
        """VMs of the requests of one kind, in order."""
        return [vm for w, vm, _, _ in self.log if w == what]

    def running(self) -> dict[str, str]:
        """vm -> host id of every guest the hosts run now."""
        return {vm: h for h, host in self.hosts.items() if host.alive for vm in host.guests}


class StandInHost(Actor):
    """A host agent stand-in: guests are entries in a dict, statuses are pushed by a task."""

    def __init__(self, config: HostConfig, world: World) -> None:
        self.config = config
        self.world = world
        self.guests: dict[str, GuestConfig] = {}
        self.status: dict[str, InstanceStatus] = {}
        self.incarnation: dict[str, int] = {}
        self.alive = True

    async def on_start(self) -> None:
        """Register and start heartbeating."""
        self.world.hosts[self.config.host_id] = self
        self.start_soon(self._heartbeat)

    async def on_stop(self) -> None:
        """A stopped host runs nothing."""
        self.alive = False

    async def _start(self, config: GuestConfig) -> int:
        vm = config.instance_id
        if vm in self.guests:
            return 1
        if vm in self.world.refuse:
            raise GuestBootError(self.world.refuse[vm])
        self.world.log.append(("start", vm, self.config.host_id, ""))
        self.guests[vm] = config
        self.world.booted[vm] = config
        await self._boot(vm)
        return 1

    async def receive(self, message: Any) -> Any:
        """The controller's asks."""
        host = self.config.host_id
        match message:
            case StartGuest(config=config):
                self.world.start_asks.append([config.instance_id])
                return await self._start(config)
            case StartGuests(configs=configs):
                self.world.start_asks.append([c.instance_id for c in configs])
                outcomes = []
                for config in configs:
                    try:
                        outcomes.append(StartOutcome(pid=await self._start(config)))
                    except GuestBootError as exc:
                        outcomes.append(StartOutcome(error_type="GuestBootError", error=str(exc)))
                return StartedGuests(outcomes)
            case StopGuest(instance_id=vm, delete_disk=delete):
                self.world.log.append(("stop", vm, host, "delete" if delete else ""))
                if vm in self.guests:
                    self.incarnation[vm] = self.incarnation.get(vm, 0) + 1
                    await self._push(vm, "StoppingVM")
                    await self._push(vm, "StoppedVM")
                    del self.guests[vm]
                    self.status.pop(vm, None)
                return None
            case RestartGuest(instance_id=vm, reimage=reimage, config=config):
                if vm not in self.guests:
                    raise UnknownInstance(f"host {host} runs no instance {vm}")
                self.world.log.append(("restart", vm, host, "reimage" if reimage else ""))
                if config is not None:
                    self.guests[vm] = config
                    self.world.booted[vm] = config
                await self._push(vm, "StoppedVM")
                await self._boot(vm)
                return 1
            case ApplyGuestEnvironment(instance_id=vm, change=change):
                if vm not in self.guests:
                    raise UnknownInstance(f"host {host} runs no instance {vm}")
                self.world.log.append(("apply", vm, host, ",".join(c.name for c in change.changes)))
                self.world.applied.setdefault(vm, []).append((change.changes, change.environment))
                if self.world.apply_answer == "recycling":
                    gen = self.incarnation[vm] = self.incarnation.get(vm, 0) + 1
                    await self._push(vm, "StoppingRole")
                    self.start_soon(self._finish_boot, vm, gen)
                return self.world.apply_answer
            case GetHostStatus():
                return self._heartbeat_message()
        return await super().receive(message)

    async def _boot(self, vm: str) -> None:
        gen = self.incarnation[vm] = self.incarnation.get(vm, 0) + 1
        await self._push(vm, "CreatingVM")
        await self._push(vm, "StartingVM")
        self.start_soon(self._finish_boot, vm, gen)

    async def _finish_boot(self, vm: str, gen: int) -> None:
        for status in ("CreatingRole", "StartingRole"):
            await anyio.sleep(self.world.boot_step)
            if self.incarnation.get(vm) != gen:
                return
            await self._push(vm, status)  # type: ignore[arg-type]
        hold = self.world.hold.get(vm)
        if hold is not None:
            await hold.wait()
        await anyio.sleep(self.world.boot_step)
        if self.incarnation.get(vm) == gen and vm in self.guests:
            await self._push(vm, self.world.outcome.get(vm, "ReadyRole"))

    async def _push(self, vm: str, status: RoleStatus) -> None:
        # As a real guest counts them: each incarnation is a boot whose role host starts once.
        starts = 1 if status in ("StartingRole", "ReadyRole", "BusyRole") else 0
        boot = f"{self.config.host_id}/{vm}#{self.incarnation.get(vm, 0)}"
        st = InstanceStatus(status=status, boot=boot, starts=starts, at=anyio.current_time())
        self.status[vm] = st
        if self.parent is not None and self.config.host_id not in self.world.silent:
            await self.parent.tell(
                InstanceStatusChanged(host_id=self.config.host_id, instance_id=vm, status=st)
            )

    def _heartbeat_message(self) -> HostHeartbeat:
        return HostHeartbeat(host_id=self.config.host_id, instances=dict(self.status), pid=0)

    async def _heartbeat(self) -> None:
        while True:
            if self.config.host_id not in self.world.silent and self.parent is not None:
                await self.parent.tell(self._heartbeat_message())
            await anyio.sleep(self.config.settings.host_heartbeat_interval)
