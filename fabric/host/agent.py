"""The host agent (seed C): one process per host. It boots and stops the guest OS of each
instance placed here, heartbeats every guest, restarts a guest OS that stays silent for
guest_heartbeat_timeout (10 minutes by default, as the seed says), relays every status change
up to the fabric controller at once (the steps of a boot a moment later, together:
fabric.host.reports), and heartbeats the controller with all of them.

The controller spawns it as the process actor ``fabric.host.agent:HostAgent`` with one
HostConfig, and asks it the messages of fabric.host.messages.
"""

from __future__ import annotations

import contextlib
import os
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from actors import Actor, ActorDead, ActorError, ProcessExited, Ref, register_error
from fabric.guest.account import NoFreeAccount
from fabric.guest.messages import ApplyEnvironment, GuestConfig, HeartbeatReply, InstanceStatus
from fabric.host.accounts import HostAccounts
from fabric.host.guests import APP_AGENT, Guest, GuestBootError, ProcessLauncher, VmLauncher
from fabric.host.link_faults import apply_guest_link
from fabric.host.messages import (
    ApplyGuestEnvironment,
    GetHostStatus,
    GuestLinkFault,
    HostConfig,
    HostHeartbeat,
    RestartGuest,
    StartedGuests,
    StartGuest,
    StartGuests,
    StartOutcome,
    StatusChange,
    StopGuest,
)
from fabric.host.net_faults import NetFault, apply_net_fault
from fabric.host.reports import StatusReports
from fabric.host.watchdog import HeartbeatWatchdog
from fabric.logs import LogFile
from fabric.model.status import RoleStatus
from fabric.network.isolation import VmFirewall, protocol_of


@register_error()
class UnknownInstance(LookupError):
    """The host runs no instance by that id (registered: the controller tells it apart)."""


class GuestAlreadyRunning(RuntimeError):
    """StartGuest named an instance that already runs here with another configuration."""


class GuestNotRunning(RuntimeError):
    """The instance's VM is down (rebooting) and cannot take the request now."""


def host_log_path(config: HostConfig) -> Path:
    """``<state_dir>/hosts/<host_id>/HostAgent.log``."""
    return Path(config.state_dir) / "hosts" / config.host_id / "HostAgent.log"


class HostAgent(Actor):
    """Runs the VMs the controller places on this host and watches them.

    Args:
        config: the host's id, cores, state folder and settings.
        vm_target: the actor class of a VM's first process ("module:Class"); the AppAgent.
        launcher: how VMs are started; by default real processes (tests may run stand-in
            guests in this process to use trio's autojump clock).
    """

    def __init__(
        self, config: HostConfig, *, vm_target: str = APP_AGENT, launcher: VmLauncher | None = None
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.launcher = launcher or ProcessLauncher(config.settings, vm_target)
        self.guests: dict[str, Guest] = {}
        #: the uids its VMs hold on this machine (chosen here, as root); a VM's folder is
        #: unique in the state folder, whichever host of the fabric runs it
        self.accounts = HostAccounts(config.state_dir, config.uids)
        #: its VMs' ports in the fabric's isolation table (None: not isolated)
        self.firewall = VmFirewall(config.firewall) if config.firewall else None
        #: status changes on their way to the controller (a boot's steps go together)
        self.statuses = StatusReports(
            config.host_id, self._tell_parent, lambda reports: self.start_soon(reports.flush_later)
        )

    async def on_start(self) -> None:
        """Open the host log and start heartbeating the controller."""
        self.log = LogFile(host_log_path(self.config))
        self.log.write(
            f"host agent {self.config.host_id} started (pid {os.getpid()}, {self.config.cores} cores, "
            f"fault domain {self.config.fault_domain})"
        )
        self.start_soon(self._heartbeat_controller)

    async def receive(self, message: Any) -> Any:
        """The controller's asks (fabric.host.messages)."""
        # Each request that waits on a VM answers from a task of its own: the mailbox stays
        # free, so ten boots run side by side and a slow on_stop holds up nobody else.
        match message:
            case StartGuest(config=config):
                self.answer_later(self._start(config))
            case StartGuests(configs=configs):
                self.answer_later(self._start_each(configs))
            case StopGuest(instance_id=instance_id, delete_disk=delete_disk):
                self.answer_later(self._stop(instance_id, delete_disk))
            case RestartGuest(instance_id=instance_id, reimage=reimage, config=config):
                self.answer_later(self._restart(instance_id, reimage, config))
            case ApplyGuestEnvironment(instance_id=instance_id, change=change):
                self.answer_later(self._apply(instance_id, change))
            case GetHostStatus():
                await self.statuses.flush()  # the answer is not ahead of the changes held back
                return self._host_status()
            case GuestLinkFault():  # chaos: drop, delay or cut the link to one VM
                return apply_guest_link(self.guests.get(message.instance_id), message)
            case NetFault():  # chaos: partition, loss, bandwidth or delay on this machine
                return await apply_net_fault(self, message)
            case _:
                return await super().receive(message)
        return None

    async def on_stop(self) -> None:
        """The VMs were stopped first (they are this actor's children); what escaped their
        process groups ends with them."""
        for guest in list(self.guests.values()):
            await guest.end_account()
            self.accounts.release(guest.instance_id)
            await self._unfirewall(guest.instance_id)
        self.log.write(f"host agent {self.config.host_id} stopped")
        self.log.close()

    # -- the controller's requests -----------------------------------------------------------------

    async def _start_each(self, configs: list[GuestConfig]) -> StartedGuests:
        """StartGuests: each config booted side by side as its own StartGuest would be; an
        outcome each (one failing does not fail the others)."""
        outcomes = [StartOutcome()] * len(configs)

        async def one(i: int, config: GuestConfig) -> None:
            try:
                outcomes[i] = StartOutcome(pid=await self._start(config))
            except Exception as exc:
                outcomes[i] = StartOutcome(error_type=type(exc).__qualname__, error=str(exc))

        async with anyio.create_task_group() as tg:
            for i, config in enumerate(configs):
                tg.start_soon(one, i, config)
        return StartedGuests(outcomes)

    async def _start(self, config: GuestConfig) -> int:
        """CreatingVM, StartingVM, boot; answer the VM's pid once its first process runs."""
        instance_id = config.instance_id
        existing = self.guests.get(instance_id)
        if existing is not None:
            if existing.config == msgspec.structs.replace(config, vm_uid=existing.config.vm_uid):
                return existing.pid  # a retried request: it runs (or reboots) already
            raise GuestAlreadyRunning(
                f"instance {instance_id} already runs on host {self.config.host_id}; "
                "restart it with RestartGuest(config=...) to change its configuration"
            )
        guest = Guest(config, self.launcher)
        self.guests[instance_id] = guest
        self.log.write(
            f"starting guest {instance_id} (role {config.role.name}, deployment {config.deployment_id})"
        )
        async with guest.lock:
            try:
                guest.config = await self._with_account(config)
                await self._report(guest, "CreatingVM", f"creating the VM in {config.vm_root}")
                await self._boot(guest)
            except GuestBootError:
                del self.guests[instance_id]
                self.accounts.release(instance_id)
                await self._unfirewall(instance_id)
                raise
        return guest.pid

    async def _with_account(self, config: GuestConfig) -> GuestConfig:
        """The config with the VM's account chosen here, as root, when the controller asks for
        one (its uid is only a proposal: this machine's processes and VMs decide); None when
        it asks for none or we are not root (no isolation)."""
        if config.vm_uid is None or os.geteuid() != 0:
            return msgspec.structs.replace(config, vm_uid=None) if config.vm_uid is not None else config
        try:
            uid = await anyio.to_thread.run_sync(self.accounts.choose, config.instance_id, config.vm_uid)
        except NoFreeAccount as exc:
            raise GuestBootError(str(exc)) from None
        if uid != config.vm_uid:
            self.log.write(f"{config.instance_id} runs as uid {uid}")
        return msgspec.structs.replace(config, vm_uid=uid)

    async def _stop(self, instance_id: str, delete_disk: bool) -> None:
        """StoppingVM, a graceful stop (the role's OnStop runs inside the guest), StoppedVM.
        A guest that answers no heartbeat is killed rather than waited for."""
        guest = self.guests.get(instance_id)
        if guest is None:
            return  # nothing runs: stopping is idempotent
        async with guest.lock:
            guest.take_over()
            self.log.write(f"stopping guest {instance_id}")
            if guest.status.status == "RoleStateUnknown":
                # It answers no heartbeat: a polite stop would only wait out its timeouts.
                self.log.warning(f"{instance_id} does not answer heartbeats; killing it instead")
                await self._report(guest, "StoppingVM", "stopping the guest OS (unresponsive: killed)")
                await guest.kill()
            else:
                await self._report(guest, "StoppingVM", "stopping the guest OS")
                # Still the current incarnation: what the guest says while it stops is relayed.
                await guest.stop()
            guest.retire()
            await self._report(guest, "StoppedVM", "the guest OS is stopped")
            if delete_disk:
                await guest.wipe_disk()
                self.log.write(f"deleted the disk of {instance_id} ({guest.config.vm_root})")
            del self.guests[instance_id]
            self.accounts.release(instance_id)
            await self._unfirewall(instance_id)
            self.log.write(f"guest {instance_id} stopped")

    async def _restart(self, instance_id: str, reimage: bool, config: GuestConfig | None) -> int:
        """Kill the guest OS whole, wipe its disk for a reimage, boot it again."""
        guest = self._guest(instance_id)
        if config is not None and config.instance_id != instance_id:
            raise ValueError(f"RestartGuest for {instance_id} carries the config of {config.instance_id}")
        what = "reimage" if reimage else "reboot"
        async with guest.lock:
            guest.take_over()
            generation = guest.retire()
            self.log.write(f"restarting the guest OS of {instance_id} on request ({what})")
            await guest.kill()
            await self._report(guest, "StoppedVM", f"restarting the guest OS ({what})")
            if reimage:
                await guest.wipe_disk()
                self.log.write(f"wiped the disk of {instance_id} ({guest.config.vm_root})")
            if config is not None:
                # it keeps its account
                guest.config = msgspec.structs.replace(config, vm_uid=guest.config.vm_uid)
            guest.failures = 0
            try:
                await self._boot(guest)
            except GuestBootError:
                self._boot_later(guest, generation, self._backoff(guest, ran=False))
                raise
        return guest.pid

    async def _apply(self, instance_id: str, change: ApplyEnvironment) -> Any:
        """Forward a configuration or topology change to the guest; return its answer."""
        guest = self._guest(instance_id)
        vm = guest.vm
        if vm is None:
            raise GuestNotRunning(
                f"instance {instance_id} is rebooting; send the change when it is ReadyRole"
            )
        self.log.write(
            f"applying a new environment to {instance_id}: {', '.join(c.name for c in change.changes) or 'no changes'}"
        )
        # The guest may recycle the role to apply it, which runs OnStop: allow for that.
        return await vm.ask(
            change, timeout=self.settings.on_stop_timeout + 2 * self.settings.process_stop_timeout
        )

    def _guest(self, instance_id: str) -> Guest:
        try:
            return self.guests[instance_id]
        except KeyError:
            raise UnknownInstance(
                f"host {self.config.host_id} runs no instance {instance_id!r}; start it with StartGuest first"
            ) from None

    async def _firewall(self, config: GuestConfig) -> None:
        """Its endpoint ports open to root and its deployment's accounts only, before it boots.

        Raises:
            GuestBootError: nft refused (the VM does not boot unprotected).
        """
        if self.firewall is None or config.vm_uid is None:
            return
        ports = [
            (protocol_of(e.protocol), e.port) for e in config.environment.current_instance.endpoints.values()
        ]
        try:
            await self.firewall.allow(config.instance_id, config.deployment_id, config.vm_uid, ports)
        except OSError as exc:
            raise GuestBootError(str(exc)) from None

    async def _unfirewall(self, instance_id: str) -> None:
        if self.firewall is not None:
            await self.firewall.forget(instance_id)

    # -- one VM's life ----------------------------------------------------------------------------

    async def _boot(self, guest: Guest) -> None:
        """StartingVM, then boot a new incarnation and watch it (call with guest.lock held).

        Raises:
            GuestBootError: after FailedStartingVM was reported.
        """
        await self._report(guest, "StartingVM", "booting the guest OS")
        generation = guest.generation
        try:
            await self._firewall(guest.config)
            await guest.boot(self, partial(self._on_push, guest))
        except GuestBootError as exc:
            self.log.error(str(exc))
            await self._report(guest, "FailedStartingVM", str(exc))
            raise
        self.log.write(f"guest {guest.instance_id} booted (pid {guest.pid})")
        scope = guest.watch_scope = anyio.CancelScope()
        self.start_soon(self._watch, guest, generation, scope)

    async def _watch(self, guest: Guest, generation: int, scope: anyio.CancelScope) -> None:
        """Heartbeat one incarnation until it goes down, then reboot it."""
        with scope:
            why, hung = await self._until_down(guest, generation)
            if why is None:
                # A clean exit we did not ask for: this host agent is stopping its children.
                if guest.generation == generation:
                    await self._report(guest, "StoppedVM", "the guest OS shut down")
                return
            async with guest.lock:
                if guest.generation != generation:
                    return
                generation = guest.retire()
                if hung:
                    self.log.error(
                        f"watchdog: no heartbeat reply from {guest.instance_id} for {why} "
                        f"(guest_heartbeat_timeout {self.settings.guest_heartbeat_timeout:g} s); "
                        "restarting the guest OS"
                    )
                    await guest.kill()
                    delay = 0.0
                    detail = f"no heartbeat reply for {why}; restarting the guest OS"
                else:
                    await guest.release()
                    delay = self._backoff(guest, ran=True)
                    self.log.error(
                        f"the guest OS of {guest.instance_id} went down ({why}); rebooting in {delay:g} s"
                    )
                    detail = f"the guest OS went down ({why}); rebooting in {delay:g} s"
                await self._report(guest, "StoppedVM", detail)
            await self._boot_after(guest, generation, delay)

    async def _until_down(self, guest: Guest, generation: int) -> tuple[str | None, bool]:
        """Wait until the VM dies or the watchdog condemns it.

        Returns why (None: stopped on request) and whether the VM still runs (hung).
        """
        vm = guest.vm
        assert vm is not None
        outcome: tuple[str | None, bool] = (None, False)
        async with anyio.create_task_group() as tg:

            async def watchdog() -> None:
                nonlocal outcome
                silent = await HeartbeatWatchdog(vm, self.settings).run(
                    partial(self._on_reply, guest, generation), partial(self._on_unknown, guest, generation)
                )
                outcome = (f"{silent:.1f} s", True)
                tg.cancel_scope.cancel()

            async def exited() -> None:
                nonlocal outcome
                reason = await vm.join()
                outcome = (None if reason is None else _describe(reason), False)
                tg.cancel_scope.cancel()

            tg.start_soon(watchdog)
            tg.start_soon(exited)
        return outcome

    def _boot_later(self, guest: Guest, generation: int, delay: float) -> None:
        """Retry a failed boot in the background, as the guest's watcher."""
        scope = guest.watch_scope = anyio.CancelScope()

        async def retry() -> None:
            with scope:
                await self._boot_after(guest, generation, delay)

        self.start_soon(retry)

    async def _boot_after(self, guest: Guest, generation: int, delay: float) -> None:
        """Boot again after ``delay``, backing off while boots fail, unless a handler took over."""
        while True:
            await anyio.sleep(delay)
            async with guest.lock:
                if guest.generation != generation:
                    return
                try:
                    await self._boot(guest)
                except GuestBootError:
                    delay = self._backoff(guest, ran=False)
                else:
                    return

    def _backoff(self, guest: Guest, *, ran: bool) -> float:
        """The delay before the next boot: a VM that cannot stay up must not spin.

        The role host's restart backoff settings apply; a VM that ran role_restart_reset
        seconds counts as healthy and starts over.
        """
        s = self.settings
        if ran and anyio.current_time() - guest.booted_at >= s.role_restart_reset:
            guest.failures = 0
        delay = min(s.role_restart_initial * s.role_restart_factor**guest.failures, s.role_restart_max)
        guest.failures += 1
        return float(delay)

    # -- status ------------------------------------------------------------------------------------

    async def _on_push(self, guest: Guest, generation: int, status: InstanceStatus) -> None:
        """A status the guest pushed: relay it at once, unless a newer one came with a heartbeat
        reply (the guest answers heartbeats ahead of the pushes queued behind them)."""
        if generation != guest.generation or status.at < guest.guest_at or status == guest.status:
            return  # stale (a heartbeat reply overtook it) or already shown
        guest.guest_at = status.at
        await self._tell_status(guest, status)

    async def _on_reply(self, guest: Guest, generation: int, reply: HeartbeatReply) -> None:
        """A heartbeat reply: its status corrects a push that was lost (or RoleStateUnknown)."""
        status = reply.status
        if generation != guest.generation or status.at < guest.guest_at:
            return  # stale: older than a push already relayed
        guest.guest_at = status.at
        if status != guest.status:
            if guest.status.status == "RoleStateUnknown":
                self.log.write(f"{guest.instance_id} answers heartbeats again ({status.status})")
            await self._tell_status(guest, status)

    async def _on_unknown(self, guest: Guest, generation: int, silent: float) -> None:
        """Heartbeats go unanswered: the host can no longer vouch for the last status."""
        if generation != guest.generation:
            return
        self.log.warning(
            f"no heartbeat reply from {guest.instance_id} for {silent:.1f} s; its state is unknown"
        )
        await self._report(guest, "RoleStateUnknown", f"no heartbeat reply from the guest for {silent:.1f} s")

    async def _report(self, guest: Guest, status: RoleStatus, detail: str) -> None:
        """Report a status the host itself knows (the VM's, rather than the role's)."""
        await self._tell_status(guest, InstanceStatus(status=status, detail=detail))

    async def _tell_status(self, guest: Guest, status: InstanceStatus) -> None:
        was, guest.status = guest.status.status, status
        self.log.write(
            f"{guest.instance_id}: {status.status}" + (f" ({status.detail})" if status.detail else "")
        )
        # The steps of a boot may wait a moment to go with the next report (fabric.host.reports).
        change = StatusChange(instance_id=guest.instance_id, status=status, uid=guest.config.vm_uid or 0)
        await self.statuses.report(change, was=was)

    def _host_status(self) -> HostHeartbeat:
        return HostHeartbeat(
            host_id=self.config.host_id,
            instances={instance_id: guest.status for instance_id, guest in self.guests.items()},
            pid=os.getpid(),
        )

    async def _heartbeat_controller(self) -> None:
        """A HostHeartbeat every host_heartbeat_interval (as the settings say now), the first at once."""
        tick = anyio.current_time()
        while True:
            await self._beat()
            tick += self.settings.host_heartbeat_interval
            await anyio.sleep(max(0.0, tick - anyio.current_time()))

    async def _beat(self) -> None:
        """Heartbeat the controller now, after the status changes held back (never ahead of
        them: it carries every status as it is now)."""
        await self.statuses.flush()
        await self._tell_parent(self._host_status())

    async def _tell_parent(self, message: Any) -> None:
        parent: Ref | None = self.parent
        if parent is None:
            return
        # The controller gone means this process ends with its link: nothing to do here.
        with contextlib.suppress(ActorDead):
            await parent.tell(message)


def _describe(reason: BaseException) -> str:
    """Why a VM went down, in words: a process actor's reasons already name themselves."""
    if isinstance(reason, (ActorError, ProcessExited)):
        return str(reason)
    return f"{type(reason).__name__}: {reason}"
