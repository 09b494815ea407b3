"""One VM as the host agent sees it: boot its first process, stop it gracefully, kill it whole.

Process concerns live here and only here. A VM is the AppAgent process in its own session and
process group, so "restart the guest OS" is one killpg. Each boot is an incarnation with its
own port (the parent its pushes go to), so nothing an old incarnation said is taken for the
new one's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import anyio
import anyio.to_thread

from actors import Actor, ActorError, ProcessExited, Ref, Template
from fabric.guest.account import end_account
from fabric.guest.disk import VmDisk
from fabric.guest.messages import GuestConfig, GuestStatus, InstanceStatus
from fabric.guest.provision import disk_of, guest_options, start_guest_template
from fabric.settings import Settings

#: The VM's first process: WaAppAgent (seed C2).
APP_AGENT: Final = "fabric.guest.app_agent:AppAgent"

OnPush = Callable[[int, InstanceStatus], Awaitable[None]]


class GuestBootError(RuntimeError):
    """A VM's first process could not start; the message says why and where its log is."""


class VmLauncher(Protocol):
    """Starts and kills the first process of a VM (a real process, or a stand-in in tests)."""

    async def launch(self, host: Actor, config: GuestConfig, *, name: str, port: Ref) -> Ref:
        """Start the VM's first process as a child of ``host``, pushing its status to ``port``."""
        ...

    async def kill(self, vm: Ref) -> None:
        """Kill the whole VM at once (the guest OS goes down) and wait until it is gone."""
        ...


class ProcessLauncher:
    """Runs each VM as a process actor in its own process group.

    Args:
        settings: the stop ladder's timeouts.
        target: the first process's actor class ("module:Class"), the AppAgent by default.
    """

    def __init__(self, settings: Settings, target: str = APP_AGENT) -> None:
        self.settings = settings
        self.target = target
        self._template: Template | None = None
        self._template_lock = anyio.Lock()

    async def launch(self, host: Actor, config: GuestConfig, *, name: str, port: Ref) -> Ref:
        """Spawn the VM's first process with ``config`` as its one argument, forked from the
        host's guest template when it runs (see fabric.guest.provision.start_guest_template)."""
        options = await anyio.to_thread.run_sync(guest_options, config, self.settings)
        if self.target == APP_AGENT:
            options = dataclasses.replace(options, template=await self._guest_template())
        return await host.spawn_process(self.target, name=name, args=(config,), parent=port, options=options)

    async def _guest_template(self) -> Template | None:
        async with self._template_lock:
            if self._template is None or not self._template.alive:
                self._template = await start_guest_template()
            return self._template

    async def kill(self, vm: Ref) -> None:
        """SIGKILL the VM's process group: a reboot gives the guest no polite stop."""
        pid = vm.pid
        if pid is not None:
            # Gone already is fine: join below still waits until it is reaped.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        await vm.join()


class GuestPort(Actor):
    """The parent of one VM incarnation: hands what it pushes up to the host agent."""

    def __init__(self, generation: int, on_push: OnPush) -> None:
        self.generation = generation
        self.on_push = on_push

    async def receive(self, message: Any) -> Any:
        """GuestStatus pushes; a VM has nothing else to tell or ask its host."""
        if isinstance(message, GuestStatus):
            await self.on_push(self.generation, message.status)
            return None
        return await super().receive(message)


class Guest:
    """One instance on this host: its configuration, its running VM, and its lifecycle.

    Every change of the VM happens under ``lock``. ``generation`` names the current
    incarnation: it moves on whenever one ends, so a push, a heartbeat reply or a watch task
    of an older incarnation can tell it is stale.
    """

    def __init__(self, config: GuestConfig, launcher: VmLauncher) -> None:
        self.config = config
        self.launcher = launcher
        self.lock = anyio.Lock()
        self.generation = 0
        self.vm: Ref | None = None
        self.port: Ref | None = None
        #: the status last reported to the controller
        self.status = InstanceStatus(status="CreatingVM")
        #: the ``at`` of the last status heard from the guest (its clock): older ones are stale
        self.guest_at = 0.0
        self.booted_at = 0.0
        #: quick failures in a row, for the reboot backoff
        self.failures = 0
        #: the task watching the current incarnation; cancelled when a handler takes over
        self.watch_scope = anyio.CancelScope()

    @property
    def instance_id(self) -> str:
        """The instance's id, e.g. ``Worker_IN_0``."""
        return self.config.instance_id

    @property
    def disk(self) -> VmDisk:
        """The VM's disk."""
        return disk_of(self.config)

    @property
    def pid(self) -> int:
        """The pid of the VM's first process, 0 when none runs."""
        return (self.vm.pid or 0) if self.vm is not None else 0

    async def boot(self, host: Actor, on_push: OnPush) -> Ref:
        """Start a new incarnation of the VM and return its Ref once its first process runs.

        Raises:
            GuestBootError: the first process could not start (its error and log are named).
        """
        self.guest_at = 0.0
        await self.end_account()  # a new guest OS: nothing of a previous one (a killed host's) runs on
        name = f"vm:{self.instance_id}"
        generation = self.generation
        self.port = await host.spawn(lambda: GuestPort(generation, on_push), name=f"port:{self.instance_id}")
        try:
            self.vm = await self.launcher.launch(host, self.config, name=name, port=self.port)
        except (ActorError, ProcessExited, OSError, RuntimeError) as exc:
            await self.release()
            log = self.disk.logs / "Guest.out.log"
            raise GuestBootError(f"the VM of {self.instance_id} could not boot: {exc} (see {log})") from exc
        self.booted_at = anyio.current_time()
        return self.vm

    def take_over(self) -> None:
        """A handler takes the guest over: the task watching it stops at once."""
        self.watch_scope.cancel()

    def retire(self) -> int:
        """End the current incarnation: from now on what it pushes or answers is ignored."""
        self.generation += 1
        return self.generation

    async def stop(self) -> None:
        """Stop the VM gracefully: the guest's own ladder runs the role's OnStop."""
        if self.vm is not None:
            await self.vm.stop()
        await self.release()

    async def kill(self) -> None:
        """Kill the VM whole, at once (the guest OS restarts: no polite stop)."""
        if self.vm is not None:
            await self.launcher.kill(self.vm)
        await self.release()

    async def release(self) -> None:
        """Forget the (dead) incarnation and stop its port; whatever still runs as the VM's
        account (it left the VM's process group) ends with it."""
        self.vm = None
        port, self.port = self.port, None
        if port is not None:
            await port.stop()
        await self.end_account()

    async def end_account(self) -> None:
        """Kill whatever still runs as the VM's account (it left the VM's process group)."""
        uid = self.config.vm_uid
        if uid is not None and os.geteuid() == 0:
            await anyio.to_thread.run_sync(end_account, uid)

    async def wipe_disk(self) -> None:
        """Remove the VM's folder: a fresh disk for a reimage, or nothing left after a delete."""
        await anyio.to_thread.run_sync(self.disk.wipe)
