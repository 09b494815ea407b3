"""WindowsAzureGuestAgent (seed D): sets up the guest OS, starts the host bootstrapper, reports
the role's status up to the host, and answers the host's heartbeats.

It runs inside the VM's first process, beside the AppAgent, which owns the bootstrapper
process: that way a new guest agent version can take over without restarting the role.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from actors import Actor, Ref, Request
from fabric.certs import CertificateError
from fabric.guest.certificates import install_certificates
from fabric.guest.log_caps import CHECK_EVERY, cap_vm_logs
from fabric.guest.messages import (
    ApplyEnvironment,
    BootstrapConfig,
    GetInstanceStatus,
    GuestConfig,
    GuestStatus,
    Heartbeat,
    HeartbeatReply,
    InstanceStatus,
    RecycleRole,
)
from fabric.guest.provision import disk_of, provision, storage_over_quota, write_configuration
from fabric.logs import LogFile


class StartBootstrapper(Request[Ref], frozen=True, tag=True):
    """Ask the AppAgent to start (or return the running) bootstrapper process; answers its Ref."""

    config: BootstrapConfig


class CurrentBootstrapper(Request[Ref | None], frozen=True, tag=True):
    """Ask the AppAgent for the running bootstrapper's Ref, or None."""


class GuestAgent(Actor):
    """The guest agent of one VM. Its handlers never wait on the AppAgent, which asks it for
    every heartbeat: all talk to the AppAgent happens in a background task."""

    version = "1.0"

    def __init__(
        self, config: GuestConfig, app_agent: Ref, runtime_log: LogFile, status_log: LogFile
    ) -> None:
        self.config = config
        self.app_agent = app_agent
        self.runtime_log = runtime_log
        self.status_log = status_log
        self.status = InstanceStatus(status="CreatingRole", detail="setting up the guest OS")
        self.bootstrapper: Ref | None = None
        self.over_quota: list[str] = []

    async def on_start(self) -> None:
        """Take over a running bootstrapper, or provision the guest OS and start one."""
        self.runtime_log.write(f"guest agent {type(self).__name__} {self.version} starting")
        self.start_soon(self._bring_up)
        self.start_soon(self._watch_storage)
        self.start_soon(self._watch_logs)

    async def _bring_up(self) -> None:
        running = await self.app_agent.ask(CurrentBootstrapper())
        if running is not None:
            self.bootstrapper = running
            self.runtime_log.write("took over the running host bootstrapper; the role keeps running")
            await self._on_status(await running.ask(GetInstanceStatus()))
            return
        await self._on_status(InstanceStatus(status="CreatingRole", detail="setting up the guest OS"))
        try:
            await anyio.to_thread.run_sync(lambda: provision(self.config, self.runtime_log.write))
        except (OSError, CertificateError) as exc:
            self.runtime_log.error(f"setting up the guest OS failed: {exc}")
            await self._on_status(
                InstanceStatus(status="FailedStartingVM", detail=f"guest setup failed: {exc}")
            )
            return
        config = BootstrapConfig(
            vm_root=self.config.vm_root,
            deployment_id=self.config.deployment_id,
            instance_id=self.config.instance_id,
            role=self.config.role,
            environment=self.config.environment,
            settings=self.config.settings,
            vm_uid=self.config.vm_uid,
            state_dir=self.config.state_dir,
            python=sys.executable,
        )
        self.runtime_log.write("starting WaHostBootstrapper")
        self.bootstrapper = await self.app_agent.ask(StartBootstrapper(config), timeout=120)

    async def _watch_storage(self) -> None:
        if not self.config.role.local_storage:
            return  # nothing to measure: no wakeup, no worker thread every diagnostics_interval
        while True:
            await anyio.sleep(self.config.settings.diagnostics_interval)
            over = await anyio.to_thread.run_sync(lambda: storage_over_quota(self.config))
            for name in sorted(set(over) - set(self.over_quota)):
                self.status_log.warning(f"LocalStorage {name} uses more than its sizeInMB")
            self.over_quota = over

    async def _watch_logs(self) -> None:
        """Keep each log of the VM under role_log_max_bytes (fabric.guest.log_caps)."""
        settings, vm = self.config.settings, Path(self.config.vm_root)
        while True:
            await anyio.sleep(min(CHECK_EVERY, settings.diagnostics_interval))
            for line in await anyio.to_thread.run_sync(cap_vm_logs, vm, settings.role_log_max_bytes):
                self.runtime_log.warning(line)

    async def receive(self, message: Any) -> Any:
        """Heartbeats, status from the bootstrapper, and changes from the host."""
        match message:
            case Heartbeat():
                return self.answer_heartbeat(message)
            case InstanceStatus():
                await self._on_status(message)
                return None
            case ApplyEnvironment():
                if self.bootstrapper is None:
                    raise RuntimeError("the role is not running yet; apply the change when it is")
                self.runtime_log.write(
                    f"new configuration: {', '.join(c.name for c in message.changes) or 'no changes'}"
                )
                # C/Config follows the configuration in force (the RemoteAccess agent reads it).
                await anyio.to_thread.run_sync(
                    write_configuration,
                    msgspec.structs.replace(self.config, environment=message.environment),
                    disk_of(self.config),
                    self.runtime_log.write,
                )
                if any(c.kind == "certificate" for c in message.changes):
                    # The new certificates are in the store folder before the role hears of them.
                    await anyio.to_thread.run_sync(
                        install_certificates,
                        self.config,
                        message.environment,
                        disk_of(self.config),
                        self.runtime_log.write,
                    )
                return await self.bootstrapper.ask(message, timeout=self.config.settings.on_stop_timeout + 60)
            case RecycleRole():
                if self.bootstrapper is not None:
                    self.runtime_log.write("recycling the role on request")
                    await self.bootstrapper.tell(message)
                return None
        return await super().receive(message)

    def answer_heartbeat(self, heartbeat: Heartbeat) -> HeartbeatReply:
        """The reply to one of the host's heartbeats (logged in WaAppAgent.log): the AppAgent
        calls it as each heartbeat arrives, never waiting on this actor's mailbox."""
        self.status_log.write(
            f"heartbeat {heartbeat.seq}: {self.status.status}"
            + (f" ({self.status.detail})" if self.status.detail else "")
        )
        return HeartbeatReply(
            seq=heartbeat.seq,
            instance_id=self.config.instance_id,
            status=self.status,
            agent_version=self.version,
            storage_over_quota=self.over_quota,
        )

    async def _on_status(self, status: InstanceStatus) -> None:
        previous = self.status
        self.status = status
        if (status.status, status.detail) != (previous.status, previous.detail):
            ready = "Ready" if status.status == "ReadyRole" else "not Ready"
            self.status_log.write(
                f"status {status.status} ({ready})" + (f": {status.detail}" if status.detail else "")
            )
            if status.status in (
                "StartingRole",
                "StoppingRole",
                "FailedStartingRole",
                "RestartingRole",
                "StoppedVM",
            ):
                self.runtime_log.write(
                    f"role {status.status}" + (f": {status.detail}" if status.detail else "")
                )
        await self.app_agent.tell(GuestStatus(instance_id=self.config.instance_id, status=status))

    async def on_stop(self) -> None:
        """Leave the bootstrapper to the AppAgent: replacing the agent must not stop the role."""
        self.runtime_log.write(f"guest agent {self.version} stopping")
