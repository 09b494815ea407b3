"""The host agent of a joined host (``fabric host join``): the same HostAgent, reached by the
controller over the network link, with what a machine of its own needs besides.

- Its pushes (InstanceStatusChanged, InstanceStatusesChanged, HostHeartbeat) go to the
  controller's ``fabric-hosts`` actor over the link, not to a parent; a heartbeat also
  describes the host (address, cores, fault domain, memory, incarnation), which is how the
  controller learns of it.
- Packages arrive in chunks (HasPackage, PackageChunk) and are kept by digest under its state
  folder; every GuestConfig is re-rooted there (fabric.host.packages).
- It chooses its instances' local ports on the address it advertises (ChoosePorts).
- It takes the controller's settings each time its link comes up (ControllerSettings), not
  only at its start: a controller restarted with other settings, or another replica leading.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec

from actors import ActorDead, MailboxFull, Ref, register_error
from fabric.certs.parse import parse_upload
from fabric.certs.store import MAX_CERTIFICATES, CertificateStore
from fabric.guest.log_files import read_log, vm_logs
from fabric.guest.messages import ApplyEnvironment, GuestConfig
from fabric.guest.plugin_agents._ready import socket_address
from fabric.guest.plugin_agents.remote_exec import EXEC_SOCKET
from fabric.guest.provision import disk_of
from fabric.host.agent import HostAgent, UnknownInstance
from fabric.host.hangs import Hangs, own_processes, signal_self
from fabric.host.hangs import ledger_path as hangs_ledger
from fabric.host.messages import (
    MAX_CHUNK,
    MAX_ENDPOINTS,
    MAX_EXEC_ANSWER,
    MAX_EXEC_REQUEST,
    MAX_LISTED,
    MAX_LOG_READ,
    MAX_SIGNALLED,
    ApplyGuestEnvironment,
    ChoosePorts,
    ExecInVm,
    GuestLog,
    HasPackage,
    HostConfig,
    HostHeartbeat,
    HostProcess,
    InstanceStatusChanged,
    InstanceStatusesChanged,
    ListProcesses,
    PackageChunk,
    PutCertificates,
    ReadGuestLog,
    ReportKey,
    RestartGuest,
    ShellChunk,
    ShellStep,
    SignalHost,
    SignalVm,
    StartGuest,
    StartGuests,
    VmProcess,
)
from fabric.host.packages import INSTANCE, PackageCache, PackageError, PackageMissing, reroot
from fabric.host.processes import Proc, scan, signal_processes
from fabric.host.prune import prune_certificates
from fabric.host.shell_relay import ShellRelays
from fabric.settings import Settings

#: the controller's actor that joined hosts report to (registered on its listening system)
REPORTS = "fabric-hosts"
#: a hosted service's name as a folder of the certificate store
SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
#: how long ports chosen for an instance stay reserved while it does not run here
RESERVED = 600.0
#: ports a joined host picks from when a proposed one is taken (below the ephemeral range)
PORT_RANGE = (20000, 32767)


@dataclass(frozen=True)
class JoinedReport:
    """A joined host's heartbeat as ``fabric-hosts`` hands it to the controller, in-process,
    with the Ref of the host's agent (over its link)."""

    heartbeat: HostHeartbeat
    agent: Ref
    #: anyio.current_time() when fabric-hosts read it off the link (None: when handled): the
    #: host was heard then, however long the controller's mailbox held it
    at: float | None = None


@dataclass(frozen=True)
class JoinedLinkLost:
    """``fabric-hosts`` to the controller, in-process: a joined host's link to it dropped."""

    host_id: str


class ControllerSettings(msgspec.Struct, frozen=True, tag=True):
    """The controller to a joined host, each time the host links: the settings it runs with."""

    settings: Settings


@register_error()
class RemoteAccessOff(RuntimeError):
    """The VM runs no RemoteAccess agent (registered: the controller answers 409 for it)."""


def _listed(p: Proc) -> HostProcess:
    return HostProcess(
        pid=p.pid,
        ppid=p.ppid,
        pgid=p.pgid,
        name=p.name,
        started=p.started,
        place=p.place,
        instance=p.instance,
    )


def port_free(address: str, port: int, protocol: str) -> bool:
    """Whether ``port`` can be bound on ``address`` now (TCP, or UDP)."""
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, kind) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


class RemoteHostAgent(HostAgent):
    """A HostAgent on a machine of its own (see the module's docstring).

    Args:
        config: the host's name (its certificate's), cores, state folder, settings.
        reports: the controller's ``fabric-hosts`` actor, across the link.
        address: the address its instances listen on (the controller and its load balancers
            connect there).
        memory_mb: the machine's memory.
        hang_backstop: the command that resumes a hang of its own processes (see signal_self).
    """

    def __init__(
        self,
        config: HostConfig,
        *,
        reports: Ref,
        address: str,
        memory_mb: int,
        hang_backstop: list[str] | None = None,
    ) -> None:
        super().__init__(config)
        #: the command of the backstop of a hang of its own processes (None: fabric.host.hangs's)
        self.hang_backstop = hang_backstop
        self.reports = reports
        self.address = address
        self.memory_mb = memory_mb
        self.boot = uuid.uuid4().hex
        #: the key the controller gave over this host's link, carried in every report
        self.key = ""
        self.packages = PackageCache(Path(config.state_dir) / "packages", config.settings.max_package_bytes)
        #: instance id -> the ports chosen for it
        self.chosen: dict[str, dict[str, int]] = {}
        self.chosen_at: dict[str, float] = {}
        #: instance id -> the VM folder the controller named (its environment's paths start there)
        self.roots: dict[str, str] = {}
        self.shells = ShellRelays()
        self._prune_due = False
        self.hangs = Hangs(
            self.start_soon, lambda line: self.log.write(line), hangs_ledger(config.state_dir, config.host_id)
        )

    async def receive(self, message: Any) -> Any:
        """The controller's asks, re-rooted; packages and ports."""
        match message:
            case StartGuest(config=config, package=package):
                return await super().receive(StartGuest(self._local(config, package)))
            case StartGuests():  # its configs name no package to re-root them in
                raise ValueError("a joined host is asked StartGuest per instance, not StartGuests")
            case RestartGuest(config=GuestConfig() as config, package=package):
                return await super().receive(
                    msgspec.structs.replace(message, config=self._local(config, package), package="")
                )
            case ApplyGuestEnvironment(instance_id=instance_id, change=change):
                return await super().receive(
                    msgspec.structs.replace(message, change=self._local_change(instance_id, change))
                )
            case HasPackage(digest=digest):
                return await anyio.to_thread.run_sync(self._wanted, digest)
            case PackageChunk(digest=digest, offset=offset, total=total, data=data):
                if len(data) > MAX_CHUNK:
                    raise PackageError(f"a chunk of {len(data)} bytes is refused (at most {MAX_CHUNK})")
                held = await anyio.to_thread.run_sync(self.packages.receive, digest, offset, total, data)
                if held == total:
                    self._prune_soon()
                return held
            case ChoosePorts():
                return await anyio.to_thread.run_sync(self._choose, message)
            case ReadGuestLog():
                return await anyio.to_thread.run_sync(self._read_log, message)
            case PutCertificates():
                return await anyio.to_thread.run_sync(self._keep_certificates, message)
            case ExecInVm():
                self.answer_later(self._exec(message))
                return None
            case ShellStep():
                self.answer_later(self._shell(message))
                return None
            case SignalVm(action="hold", processes=processes, duration=duration):
                self.hangs.renew(processes, duration)  # chaos renews a hang with no end of its own
                return []
            case SignalVm(instance_id=instance_id):
                self._guest(instance_id)  # UnknownInstance for a VM this host does not run
                self.answer_later(self._signal_vm(message))
                return None
            case SignalHost(place=place, action=action, duration=duration, id=hang):
                if action == "stop" and not duration:
                    raise ValueError("a joined host's own processes are stopped only for a duration")
                procs = await anyio.to_thread.run_sync(own_processes, place == "host")
                self.start_soon(signal_self, procs, action, duration, self.hang_backstop, hang)
                return [_listed(p) for p in procs[:MAX_LISTED]]
            case ListProcesses():
                procs = await anyio.to_thread.run_sync(own_processes, True)
                return [_listed(p) for p in procs[:MAX_LISTED]]
            case ControllerSettings(settings=settings):
                self._take_settings(settings)
                return None
            case ReportKey(key=key):
                if key != self.key:
                    self.key = key
                    await self._beat()  # heard at once, not at the next beat
                return None
        return await super().receive(message)

    def _take_settings(self, settings: Settings) -> None:
        """Run with the controller's settings from now on (a VM's heartbeat watchdog keeps those
        it started with until it starts again); the host log says what changed."""
        if settings == self.settings:
            return
        old, new = msgspec.structs.asdict(self.settings), msgspec.structs.asdict(settings)
        changed = [f"{k} {old[k]!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
        self.settings = settings
        self.config = msgspec.structs.replace(self.config, settings=settings)
        if hasattr(self.launcher, "settings"):
            self.launcher.settings = settings
        self.packages.max_bytes = settings.max_package_bytes
        self.log.write(f"the controller's settings, taken as the link came up: {', '.join(changed)}")

    def _local(self, config: GuestConfig, package: str) -> GuestConfig:
        """A GuestConfig as this host runs it (PackageError when the package is missing)."""
        folder = self.packages.path(package)
        if not folder.is_dir():
            raise PackageMissing(
                f"package {package[:12]} is not on host {self.config.host_id}; ship it first"
            )
        local = reroot(config, Path(self.config.state_dir), folder)
        self.roots[config.instance_id] = config.vm_root
        return local

    def _local_change(self, instance_id: str, change: ApplyEnvironment) -> ApplyEnvironment:
        old = self.roots.get(instance_id)
        guest = self.guests.get(instance_id)
        if old is None or guest is None:
            return change  # refused by the agent: it runs no such instance
        shape = msgspec.structs.replace(guest.config, vm_root=old, environment=change.environment)
        moved = reroot(shape, Path(self.config.state_dir), Path(guest.config.role_code_dir).parent)
        return msgspec.structs.replace(change, environment=moved.environment)

    def _choose(self, request: ChoosePorts) -> dict[str, int]:
        if len(request.proposed) > MAX_ENDPOINTS:
            raise ValueError(f"an instance may have at most {MAX_ENDPOINTS} endpoints")
        now = time.monotonic()
        for iid in [i for i, at in self.chosen_at.items() if i not in self.guests and now - at > RESERVED]:
            self.chosen.pop(iid, None)  # chosen for an instance that never came or has gone
            self.chosen_at.pop(iid, None)
            self.roots.pop(iid, None)
        held = {p for iid, ports in self.chosen.items() if iid != request.instance_id for p in ports.values()}
        mine = self.chosen.get(request.instance_id, {})
        chosen: dict[str, int] = {}
        for name, proposed in sorted(request.proposed.items()):
            protocol = request.protocols.get(name, "tcp")
            if mine.get(name) == proposed and request.instance_id in self.guests:
                chosen[name] = proposed  # it runs with it
            elif proposed not in held and self._bindable(proposed, protocol):
                chosen[name] = proposed
            else:
                chosen[name] = self._pick(request.fixed.get(name, []), protocol, held)
            held.add(chosen[name])
        self.chosen[request.instance_id] = chosen
        self.chosen_at[request.instance_id] = now
        return chosen

    def _bindable(self, port: int, protocol: str) -> bool:
        if not 1 <= port <= 65535:
            return False
        if protocol == "udp":
            return port_free(self.address, port, "udp")
        return port_free(self.address, port, "tcp") and port_free(self.address, port, "udp")

    def _pick(self, fixed: list[tuple[int, int]], protocol: str, held: set[int]) -> int:
        if fixed:
            for low, high in fixed[:64]:
                for port in range(max(1, low), min(65535, high) + 1):
                    if port not in held and self._bindable(port, protocol):
                        return port
            raise ValueError(f"every fixed port of the endpoint is in use on {self.address}")
        low, high = PORT_RANGE
        for _ in range(2000):
            port = random.randint(low, high)
            if port not in held and self._bindable(port, protocol):
                return port
        raise ValueError(f"no free port on {self.address} in {low}-{high}")

    async def _exec(self, request: ExecInVm) -> bytes:
        """Relay one request to the VM's RemoteAccess agent and return its answer line."""
        if len(request.line) > MAX_EXEC_REQUEST or not 0 < request.timeout <= 4000:
            raise ValueError(f"an exec request takes at most {MAX_EXEC_REQUEST} bytes and 4000 s")
        guest = self._guest(request.instance_id)
        socket_path = disk_of(guest.config).runtime_dir / EXEC_SOCKET
        try:
            with socket_address(socket_path) as address:
                stream = await anyio.connect_unix(address)
        except OSError:
            raise RemoteAccessOff(
                f"remote access is not enabled for role {guest.config.role.name}: import the RemoteAccess "
                "plugin in its definition and set Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled to "
                "true (or the instance is not running)"
            ) from None
        data = b""
        async with stream:
            with contextlib.suppress(anyio.BrokenResourceError):
                await stream.send(request.line.rstrip(b"\n") + b"\n")
            with (
                anyio.move_on_after(request.timeout),
                contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError),
            ):
                while b"\n" not in data and len(data) <= MAX_EXEC_ANSWER:
                    data += await stream.receive()
        if b"\n" not in data:
            raise TimeoutError("the instance's remote access agent did not answer in time")
        return data.split(b"\n", 1)[0]

    async def _shell(self, step: ShellStep) -> ShellChunk:
        """One step of a relayed `fabric shell` (fabric.host.shell_relay)."""
        socket_path, role = Path(), ""
        if step.op == "open":
            guest = self._guest(step.instance_id)
            socket_path, role = disk_of(guest.config).runtime_dir / EXEC_SOCKET, guest.config.role.name
        try:
            return await self.shells.step(step, socket_path)
        except OSError:
            raise RemoteAccessOff(
                f"remote access is not enabled for role {role}: import the RemoteAccess plugin in its "
                "definition and set Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled to true "
                "(or the instance is not running)"
            ) from None

    async def _stop(self, instance_id: str, delete_disk: bool) -> None:
        await super()._stop(instance_id, delete_disk)
        self._prune_soon()  # its package and certificates may be used by no VM now

    async def _apply(self, instance_id: str, change: ApplyEnvironment) -> Any:
        try:
            return await super()._apply(instance_id, change)
        finally:
            self._prune_soon()  # a certificate replaced (renewed) is used no more

    def _wanted(self, digest: str) -> bool:
        """Whether a package is here; one asked for is not pruned for a while (it is about to
        boot a VM). Blocking."""
        if not self.packages.has(digest):
            return False
        with contextlib.suppress(OSError):
            os.utime(self.packages.path(digest))
        return True

    def _prune_soon(self) -> None:
        """Prune now, and once more when what is kept only for being recent may be old enough."""
        self.start_soon(self._prune, 0.0)
        if not self._prune_due:
            self._prune_due = True
            self.start_soon(self._prune, self.settings.package_prune_after + 1.0)

    async def _prune(self, after: float) -> None:
        """Remove the packages and certificates no VM of this host uses (fabric.host.prune)."""
        if after:
            await anyio.sleep(after)
            self._prune_due = False
        guests = [g.config for g in self.guests.values()]
        packages = {Path(c.role_code_dir).parent.name for c in guests}
        certificates = {
            (c.hosted_service.lower(), ref.thumbprint.upper())
            for c in guests
            for ref in c.environment.certificates.values()
        }
        grace = self.settings.package_prune_after

        def prune() -> list[str]:
            gone = self.packages.prune(packages, newest=0, older_than=grace)
            return gone + prune_certificates(Path(self.config.state_dir), certificates, grace)

        removed = await anyio.to_thread.run_sync(prune)
        if removed:
            self.log.write(f"removed what no VM here uses any more: {', '.join(r[:40] for r in removed)}")

    async def on_stop(self) -> None:
        """Resume what chaos holds stopped, close the relayed shells, then stop as any host agent."""
        self.hangs.resume_all()
        await self.shells.aclose()
        await super().on_stop()

    async def _signal_vm(self, request: SignalVm) -> list[VmProcess]:
        """Chaos on one of this host's VMs; a stop with a duration is resumed here at its end
        (fabric.host.hangs), a resume on request is no longer."""
        if request.action == "resume":
            self.hangs.release(request.processes)
        done = await anyio.to_thread.run_sync(self._signal, request)
        if request.action == "stop":
            self.hangs.hold(done, request.duration)
        return [
            VmProcess(pid=p.pid, pgid=p.pgid, name=p.name, started=p.started, place=p.place) for p in done
        ]

    def _signal(self, request: SignalVm) -> list[Proc]:
        """Chaos on one of this host's VMs, as the controller's machine does it to its own
        (fabric.host.processes); blocking (reads /proc)."""
        if len(request.processes) > MAX_SIGNALLED:
            raise ValueError(f"at most {MAX_SIGNALLED} processes at once")
        mine = [p for p in scan(os.getpid()).procs if p.instance == request.instance_id]
        if request.action == "resume":  # only processes of that VM here, as they were stopped
            wanted = dict(request.processes)
            procs = [p for p in mine if abs(wanted.get(p.pid, -1.0) - p.started) <= 0.01]
        else:
            place = request.place
            procs = [p for p in mine if p.place == place][:MAX_SIGNALLED]
        assert request.action != "hold"
        return signal_processes(procs, request.action)

    def _keep_certificates(self, request: PutCertificates) -> int:
        """Keep the certificates in this host's store (sealed with its own key)."""
        if len(request.certificates) > MAX_CERTIFICATES or not SERVICE.fullmatch(request.service):
            raise ValueError(f"at most {MAX_CERTIFICATES} certificates of one hosted service")
        store = CertificateStore(self.config.state_dir)
        for copy in request.certificates:
            data = copy.certificate_pem.encode() + b"\n" + copy.key_pem
            if len(data) > 256 * 1024:
                raise ValueError("a certificate and its key take at most 256 KiB")
            store.add(request.service, parse_upload(data, "pem"))
        return len(request.certificates)

    def _read_log(self, request: ReadGuestLog) -> GuestLog:
        """A VM's logs under this host's state folder (`fabric logs`, over the link)."""
        if not INSTANCE.fullmatch(request.instance_id) or request.instance_id in (".", ".."):
            raise PackageError(f"{request.instance_id[:80]!r} is not an instance id")
        if not 0 <= request.offset <= 1 << 50 or not 0 <= request.limit <= MAX_LOG_READ:
            raise ValueError(f"offset 0 to 2**50 and limit 0 to {MAX_LOG_READ}")
        vm = Path(self.config.state_dir) / "vms" / request.instance_id
        if not vm.is_dir():
            raise UnknownInstance(f"host {self.config.host_id} has no VM {request.instance_id!r}")
        logs = vm_logs(vm)
        sizes = {}
        for name, path in logs.items():
            with contextlib.suppress(OSError):
                sizes[name] = path.stat().st_size
        paths = {name: str(logs[name].relative_to(vm)) for name in sizes}
        if not request.which:
            return GuestLog(logs=sizes, paths=paths)
        found = {n.lower(): p for n, p in logs.items()}.get(request.which.lower())
        if found is None:
            have = ", ".join(logs) or "none yet"
            raise UnknownInstance(
                f"{request.instance_id} has no {request.which[:80]}.log yet; its logs: {have}"
            )
        data, size = read_log(found, request.offset, request.limit)
        return GuestLog(logs=sizes, data=data, size=size, paths=paths)

    def _host_status(self) -> HostHeartbeat:
        return msgspec.structs.replace(
            super()._host_status(),
            address=self.address,
            cores=self.config.cores,
            fault_domain=self.config.fault_domain,
            memory_mb=self.memory_mb,
            boot=self.boot,
        )

    async def _tell_parent(self, message: Any) -> None:
        # Across the network: never wait for a link that is down (the next heartbeat carries
        # every status again).
        if isinstance(message, (HostHeartbeat, InstanceStatusChanged, InstanceStatusesChanged)):
            message = msgspec.structs.replace(message, key=self.key)
        with contextlib.suppress(ActorDead, MailboxFull):
            self.reports.tell_nowait(message)
