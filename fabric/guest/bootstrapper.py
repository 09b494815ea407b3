"""WaHostBootstrapper (seed E, steps 6 to 9): configures and runs one role instance inside its VM.

The guest agent spawns it as the process actor ``fabric.guest.bootstrapper:HostBootstrapper``
with one BootstrapConfig. on_start returns at once; a background task then:

6. for a full IIS web role, runs IISConfigurator to delete the role's stale site configuration;
7. runs the startup tasks, plugin tasks first (a failing simple task blocks the instance in
   FailedStartingRole, naming the task, its exit code and its log);
8. for a full IIS web role, runs IISConfigurator to configure each site;
9. starts the role host and keeps it running (see role_host), with, for a full IIS role, the
   sites' listening sockets and a W3WP started on the first request (see web_workers).

Every status change is told to the parent at once as an InstanceStatus, and answers
GetInstanceStatus. ApplyEnvironment raises the role's changing/changed events; RecycleRole
recycles the role host. Stopping the bootstrapper (the VM stops) stops the role host by its
ladder, gives foreground tasks until on_stop_timeout to exit, kills background tasks and stops
W3WP: no process it started survives it. Every step goes to WaHostBootstrapper.log.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream

from actors import Actor, ActorDead
from fabric.guest.account import vm_sandbox
from fabric.guest.chaos_directives import with_startup_fault
from fabric.guest.disk import VmDisk
from fabric.guest.messages import (
    ApplyEnvironment,
    BootstrapConfig,
    GetInstanceStatus,
    InstanceStatus,
    RecycleRole,
)
from fabric.guest.plugins import startup_plan
from fabric.guest.role_host import RoleHost
from fabric.guest.role_launch import HostKind, host_kind, prepare_files, release_unused_seed
from fabric.guest.startup import StartupTaskError, StartupTasks, open_startup_tasks
from fabric.guest.web_configurator import ConfiguratorRequest, site_infos
from fabric.guest.web_workers import EndpointBindError, WebWorkers, close_sockets, open_sockets_when_free
from fabric.logs import LogFile
from fabric.model.status import RoleStatus
from roles.protocol import EndpointInfo, SiteBinding, SiteInfo


class HostBootstrapper(Actor):
    """WaHostBootstrapper; see the module docstring."""

    def __init__(self, config: BootstrapConfig) -> None:
        self.config = config
        self.settings = config.settings
        self.disk = VmDisk(Path(config.vm_root), config.deployment_id, config.role.name, config.instance_id)
        self.role: RoleHost | None = None
        #: this boot of the VM: the controller counts role host starts per boot
        self.boot = secrets.token_hex(8)
        self.status = InstanceStatus(status="StartingRole", detail="the host bootstrapper is starting")
        self._work = anyio.CancelScope()
        self._done = anyio.Event()
        self._stop_deadline = math.inf
        self._sockets: dict[str, socket.socket] = {}

    # -- the actor --------------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Open the log and start the work in the background."""
        for folder in (self.disk.diagnostic_store, self.disk.role_resources, self.disk.approot):
            folder.mkdir(parents=True, exist_ok=True)
        self.log = LogFile(self.disk.bootstrapper_log)
        self.log.write(
            f"WaHostBootstrapper starting (pid {os.getpid()}) for {self.config.instance_id} of "
            f"deployment {self.config.deployment_id}, role {self.config.role.name}"
        )
        send, receive = anyio.create_memory_object_stream[InstanceStatus](math.inf)
        self._status_send = send
        self.start_soon(self._push, receive, name="push status")
        self._set("StartingRole", "the host bootstrapper is starting")
        await release_unused_seed(self.config)
        self.start_soon(self._main, name="bootstrap")

    async def receive(self, message: Any) -> Any:
        """GetInstanceStatus, ApplyEnvironment and RecycleRole from the guest agent."""
        match message:
            case GetInstanceStatus():
                return self.status
            case ApplyEnvironment():
                if self.role is None:
                    self.config = msgspec.structs.replace(self.config, environment=message.environment)
                    self.log.write("new environment recorded before the role host started")
                    return "applied"
                answer = await self.role.apply(message)
                self.log.write(f"ApplyEnvironment: {answer}")
                return answer
            case RecycleRole():
                if self.role is None:
                    self.log.write("RecycleRole: no role host runs yet; nothing to recycle")
                else:
                    self.role.recycle(None, "a recycle was requested")
                return None
        return await super().receive(message)

    @property
    def stop_budget(self) -> float:
        """How long the VM's stop may take: the role's on_stop, then its process's stop."""
        return self.settings.on_stop_timeout + self.settings.process_stop_timeout

    async def on_stop(self) -> None:
        """The VM stops: stop the role host, wait for foreground tasks, kill the rest."""
        s = self.settings
        self._stop_deadline = anyio.current_time() + s.on_stop_timeout
        self.log.write("the VM is stopping: stopping the role")
        self._set("StoppingRole", "the VM is stopping")
        self._work.cancel()
        with anyio.move_on_after(self.stop_budget):
            await self._done.wait()
        self.log.write("WaHostBootstrapper stopped")
        self.log.close()

    # -- status -------------------------------------------------------------------------------------

    def _set(self, status: RoleStatus, detail: str) -> None:
        role = self.role
        pid = role.current.pid if role is not None else 0
        new = InstanceStatus(
            status=status,
            detail=detail,
            restarts=role.restarts if role is not None else 0,
            boot=self.boot,
            starts=role.current.number if role is not None else 0,
            role_pid=pid,
            at=anyio.current_time(),
        )
        old = self.status
        if (old.status, old.detail, old.restarts, old.role_pid) == (status, detail, new.restarts, pid):
            return
        self.status = new
        if (old.status, old.detail) != (status, detail):
            self.log.write(f"status {status}" + (f": {detail}" if detail else ""))
        self._status_send.send_nowait(new)

    async def _push(self, receive: MemoryObjectReceiveStream[InstanceStatus]) -> None:
        async with receive:
            async for status in receive:
                if self.parent is not None:
                    with contextlib.suppress(ActorDead):
                        await self.parent.tell(status)

    # -- the work -----------------------------------------------------------------------------------

    async def _main(self) -> None:
        runtime_dir = self.disk.runtime_dir
        # Sockets a killed bootstrapper left behind go first; the folder is root's alone.
        await anyio.to_thread.run_sync(_fresh_folder, runtime_dir)
        uid = self.config.vm_uid
        try:
            async with (
                open_startup_tasks(
                    disk=self.disk,
                    environment=self.config.environment,
                    vm_uid=uid,
                    sandbox=vm_sandbox(self.disk, self.config.state_dir) if uid is not None else None,
                    python=self.config.python,
                    simple_timeout=self.settings.simple_task_timeout,
                    log=self.log.write,
                    foreground_deadline=lambda: self._stop_deadline,
                ) as tasks,
                anyio.create_task_group() as web,
            ):
                with self._work:
                    await self._bootstrap(tasks, web, runtime_dir)
                # Shielded, so that a cancelled VM still stops its role host; bounded by the stop budget.
                with anyio.move_on_after(self.stop_budget, shield=True):
                    if self.role is not None:
                        await self.role.stop()
                web.cancel_scope.cancel()
        finally:
            close_sockets(self._sockets)
            shutil.rmtree(runtime_dir, ignore_errors=True)
            self._done.set()

    async def _bootstrap(self, tasks: StartupTasks, web: anyio.abc.TaskGroup, runtime_dir: Path) -> None:
        role, config = self.config.role, self.config
        kind = host_kind(role)
        self.log.write(f"role {role.name}: {role.kind} role, host {kind}; reading the role model")
        if kind == "iis":
            await self._configurator("cleanup")  # step 6
        plans = startup_plan(
            role,
            config.environment,
            disk=self.disk,
            settings=self.settings,
            python=config.python or _python(),
            runtime_dir=runtime_dir,
            bootstrapper_pid=os.getpid(),
            vm_uid=config.vm_uid,
            state_dir=config.state_dir,
        )
        plans, planted = with_startup_fault(self.disk, plans)
        if planted:
            self.log.warning(planted)
        self._set("StartingRole", f"running {len(plans)} startup task{'s' * (len(plans) != 1)}")
        try:
            await tasks.run(plans)  # step 7
        except StartupTaskError as exc:
            await self._blocked(str(exc))
        self.log.write("the startup tasks are done")
        if kind == "iis":
            await self._configurator("configure")  # step 8
        await self._run_role(kind, web)  # step 9

    async def _blocked(self, detail: str) -> None:
        """The instance cannot start: show why and wait for the VM to stop."""
        self.log.error(detail)
        self._set("FailedStartingRole", detail)
        await anyio.sleep_forever()

    async def _configurator(self, action: str) -> None:
        c = self.config
        request = ConfiguratorRequest(
            action="cleanup" if action == "cleanup" else "configure",
            vm_root=c.vm_root,
            deployment_id=c.deployment_id,
            instance_id=c.instance_id,
            role=c.role,
            environment=c.environment,
            vm_uid=c.vm_uid,
        )
        self.log.write(f"running IISConfigurator {action}")
        command = [c.python or _python(), "-m", "fabric.guest.web_configurator"]
        try:
            result = await anyio.run_process(command, input=msgspec.json.encode(request), check=False)
        except OSError as exc:
            await self._blocked(f"IISConfigurator {action} could not start: {exc}")
        self.log.write(f"IISConfigurator {action} exited with code {result.returncode}")
        if result.returncode != 0:
            reason = result.stderr.decode(errors="replace").strip().splitlines() or ["(no message)"]
            await self._blocked(
                f"IISConfigurator {action} exited with code {result.returncode}: {reason[-1]}; "
                f"see {self.disk.role_log('IISConfigurator.log')}"
            )

    async def _run_role(self, kind: HostKind, web: anyio.abc.TaskGroup) -> None:
        role = self.config.role
        endpoints = self.config.environment.current_instance.endpoints
        sites: list[SiteInfo] = []
        if kind == "iis":
            sites = site_infos(role, self.disk)
            names = dict.fromkeys(b.endpoint_name for site in sites for b in site.bindings)
            wanted = [endpoints[name] for name in names if name in endpoints]
        elif kind == "hwc":
            wanted = [ep for ep in _input_endpoints(self.config) if ep.protocol in ("http", "https")]
            bindings = [
                SiteBinding(name=f"Endpoint{i}", endpoint_name=ep.name) for i, ep in enumerate(wanted)
            ]
            if bindings:
                sites = [
                    SiteInfo(name="Web", index=0, physical_path=str(self.disk.approot), bindings=bindings)
                ]
        else:
            wanted = []
        try:
            self._sockets = await open_sockets_when_free(wanted, self.log.write)
        except EndpointBindError as exc:
            await self._blocked(str(exc))
        for name, sock in self._sockets.items():
            self.log.write(f"listening on {sock.getsockname()[:2]} for endpoint {name}")
        fds = {name: sock.fileno() for name, sock in self._sockets.items()}
        host = self.role = RoleHost(
            system=self.system,
            config=self.config,
            disk=self.disk,
            log=self.log.write,
            set_status=self._set,
            sites=sites,
            listen_fds=fds if kind == "hwc" else {},
        )
        host.refresh = lambda: self._set(self.status.status, self.status.detail)
        try:
            await anyio.to_thread.run_sync(prepare_files, self.config, self.disk, kind)
        except OSError as exc:
            self.log.warning(f"cannot give the VM's account its log files: {exc}")
        if kind == "iis" and self._sockets:
            s = self.settings
            workers = WebWorkers(
                self._sockets,
                lambda worker_fds: host.spawn("w3wp", workers.on_state, worker_fds),
                log=self.log.write,
                release=host.release,
                stop_timeout=s.process_stop_timeout,
                retry_after=s.role_restart_max,
            )
            workers.on_recycle = lambda detail: host.recycle(None, f"W3WP: {detail}")
            host.on_recycle = workers.recycle
            host.event_targets = lambda: [r for r in [workers.worker_ref()] if r is not None]
            web.start_soon(workers.run, name="W3WP activation")
        await host.run()


def _input_endpoints(config: BootstrapConfig) -> list[EndpointInfo]:
    endpoints = config.environment.current_instance.endpoints
    return [endpoints[ep.name] for ep in config.role.input_endpoints if ep.name in endpoints]


def _python() -> str:
    return sys.executable


def _fresh_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
