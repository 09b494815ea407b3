"""Helpers for the guest agent tests: boot a VM of an example and watch its status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from actors import ActorSystem, Ref, open_system
from fabric.guest.agent import GuestAgent
from fabric.guest.messages import GuestConfig, GuestStatus, RecycleRole
from fabric.guest.standalone import StatusWatcher, boot_vm, guest_config_for
from fabric.model import load_service
from fabric.settings import Settings
from tests.paths import EXAMPLES


@dataclass
class Vm:
    """A booted VM and everything it told us."""

    system: ActorSystem
    config: GuestConfig
    ref: Ref
    statuses: list[str] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def record(self, status: GuestStatus) -> None:
        self.statuses.append(status.status.status)
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, status: str, seconds: float = 60.0) -> None:
        """Wait until the VM reports ``status`` (or fail after ``seconds``)."""
        with anyio.fail_after(seconds):
            while status not in self.statuses:
                await self.changed.wait()


@asynccontextmanager
async def booted(
    example: str, role: str, tmp_path: Path, *, settings: Settings | None = None, agent: str | None = None
) -> AsyncIterator[Vm]:
    """Boot one instance of an example's role in a fresh state folder; stop it on exit."""
    settings = settings or Settings.fast()
    service = load_service(EXAMPLES / example)
    config = guest_config_for(service, role, 0, tmp_path / "state", settings)
    if agent is not None:
        import msgspec

        config = msgspec.structs.replace(config, agent=agent)
    async with open_system() as system:
        holder: list[Vm] = []
        watcher = await system.spawn(lambda: StatusWatcher(lambda s: holder[0].record(s)), name="watcher")
        vm = Vm(system, config, ref=None)  # type: ignore[arg-type]
        holder.append(vm)
        vm.ref = await boot_vm(system, config, watcher, settings)
        try:
            yield vm
        finally:
            await vm.ref.stop()


class GuestAgentV2(GuestAgent):
    """A newer guest agent version, for the in-place update test."""

    version = "2.0"


class CrashingAgent(GuestAgent):
    """A guest agent that crashes when told to recycle the role (a bug in the agent)."""

    async def receive(self, message: Any) -> Any:
        if isinstance(message, RecycleRole):
            raise RuntimeError("the guest agent crashed")
        return await super().receive(message)
