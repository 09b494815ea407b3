"""The hosts of a pool: spinning them up, hearing their heartbeats, and declaring them dead.

A host is a host agent process (``fabric.host.agent:HostAgent``) whose parent is the
controller; tests pass a factory that builds in-process stand-ins instead. A joined host
(``fabric host join`` on another machine) runs the same agent there, reached over its network
link: it is learnt from its first heartbeat (relayed by ``fabric-hosts``, fabric.cluster.port),
used once heard, sent its packages before its instances (``ship``), and declared dead after the
same silence (nothing of it is killed from here: when it comes back, the controller stops what
it no longer owns). A host that stays
silent for ``host_failure_timeout``, or whose process ends without being asked to, is dead:
its process is killed (it may be hung) and the controller moves its instances elsewhere.

Silence only counts while the controller was listening. As Kubernetes' node lifecycle
controller refuses to evict when it was the one cut off, the controller first checks that it
ran on time itself: when its event loop stalled, or one command held its mailbox (where the
heartbeats wait), every host gets a fresh grace period instead of a death sentence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec

from actors import Actor, ActorDead, ActorError, ProcessOptions, Ref, Request
from fabric.certs.store import CertificateStore
from fabric.controller.idle_clock import clock, listened_until
from fabric.controller.placement import HostSlot
from fabric.controller.store import HostRecord
from fabric.guest.messages import GuestConfig
from fabric.host.messages import (
    MAX_CHUNK,
    ApplyGuestEnvironment,
    CertificateCopy,
    HasPackage,
    HostConfig,
    HostHeartbeat,
    PackageChunk,
    PutCertificates,
    RestartGuest,
    StartGuest,
)
from fabric.host.packages import PackageMissing, pack, prune_tars
from fabric.host.remote import JoinedReport as JoinedReport
from fabric.network import isolation
from fabric.settings import Settings
from roles.protocol import RoleEnvironmentData

log = logging.getLogger("fabric.controller")

#: Timeouts of silence a saturated controller adds before it blames a host all the same
SATURATED_GRACE = 2
#: Above this many hosts in the pool, a host coming up is a debug line, not an info line
QUIET_HOSTS_ABOVE = 64
#: Builds a host for the controller (its parent) and returns its Ref once it runs.
HostFactory = Callable[[Actor, HostConfig], Awaitable[Ref]]
#: Starts a local host that is not the controller's child (a replica's: fabric.replica.local_hosts);
#: it links to the host port as a joined host does.
HostLauncher = Callable[[HostConfig], Awaitable[None]]
#: The answer type of a request to a host.
Answer = TypeVar("Answer")


class HostUnavailable(Exception):
    """The host of an instance is dead (its instances are healed elsewhere)."""


class HostStartFailed(HostUnavailable):
    """A host could not be spun up (its process failed to start); a later use tries again."""


async def spawn_host_process(controller: Actor, config: HostConfig) -> Ref:
    """The default HostFactory: a real host agent process, child of the controller."""
    folder = Path(config.state_dir) / "hosts" / config.host_id
    folder.mkdir(parents=True, exist_ok=True)
    s = config.settings
    return await controller.spawn_process(
        "fabric.host.agent:HostAgent",
        name=f"host:{config.host_id}",
        args=(config,),
        options=ProcessOptions(
            log_path=folder / "host.out.log",
            # Its own session: a Ctrl-C meant for the fabric must not kill hosts before the
            # controller stops them in order.
            new_session=True,
            # No link pings: host heartbeats and host_failure_timeout decide when a host is
            # dead (a ping timeout would condemn a hung host sooner than the setting says).
            ping_interval=None,
            # Stopping a host stops its guests, each of which may run OnStop that long.
            stop_timeout=s.on_stop_timeout + 3 * s.process_stop_timeout,
            term_timeout=s.process_stop_timeout,
        ),
    )


@dataclass(eq=False)
class Host:
    """One host of the pool: a local host process, or a joined host on another machine."""

    record: HostRecord
    ref: Ref | None = None
    alive: bool = True
    #: anyio.current_time() of its last heartbeat (or of when it was added)
    last_seen: float = 0.0
    pid: int = 0
    spawn_lock: anyio.Lock = field(default_factory=anyio.Lock)
    #: a joined host: the address its instances listen on ("" for a local host: 127.0.0.1)
    address: str = ""
    memory_mb: int = 0
    #: a joined host's agent incarnation as last heard ("" before this controller heard it)
    boot: str = ""
    #: Unix time of its last heartbeat (0: not heard since this controller started)
    heard_at: float = 0.0
    #: package digests the joined host holds as far as we know (shipped, or asked, since it was
    #: heard anew; one it pruned since is refused with PackageMissing), and the lock of shipping one
    packages: set[str] = field(default_factory=set)
    ship_lock: anyio.Lock = field(default_factory=anyio.Lock)
    #: VMs it runs that it no longer owns, being stopped
    stopping: set[str] = field(default_factory=set)
    #: a joined host: the hosted service of each VM it was sent (whose certificates it needs)
    services: dict[str, str] = field(default_factory=dict)
    #: a local host reached over a link as a joined one (started detached by a launcher)
    linked: bool = False
    #: set when it is heard over its link (a launched local host: it runs)
    heard: anyio.Event = field(default_factory=anyio.Event)
    #: a launched local host being started: not silent (a process starting on a loaded machine)
    launching: bool = False

    @property
    def id(self) -> str:
        """The host id (``<pool>-host<n>``, or a joined host's certificate name)."""
        return self.record.id

    @property
    def joined(self) -> bool:
        """Whether it is reached over a link (``fabric host join``, or a replica's local host)
        rather than as our child."""
        return self.linked or is_joined(self.record)

    @property
    def launched(self) -> bool:
        """A local host this controller starts detached when it needs it (a replica's)."""
        return self.linked and not is_joined(self.record)

    @property
    def usable(self) -> bool:
        """Alive, and (a joined host) linked and heard: placement may use it."""
        return self.alive and (not self.joined or self.ref is not None or self.launched)


def is_joined(record: HostRecord) -> bool:
    """Whether a stored host is a joined one (a local host's id is ``<pool>-host<number>``)."""
    return record.id != f"{record.pool}-host{record.number}"


class HostInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a host is, for views (fabric.controller.host_admin)."""

    id: str
    kind: str
    address: str
    cores: int
    memory_mb: int
    fault_domain: int
    #: Unix time of its last heartbeat; 0 when not heard since this controller started
    last_heard: float
    alive: bool
    #: running: its process runs (local) or its link is up and it was heard (joined)
    running: bool


class HostPool:
    """The live hosts of one controller.

    Args:
        owner: the controller actor (parent of every host).
        factory: builds one host.
        settings: timeouts and limits.
        state_dir: the fabric's state folder (hosts keep their logs under hosts/<id>).
        on_dead: called once for the hosts declared dead together, with why (after their
            processes were killed): one call for a watch's whole batch.
        closing: whether the controller is stopping (hosts then stop on purpose, and slowly).
        busy_since: when the controller began the message it is handling (None when idle):
            while it handles one message, heartbeats wait in its mailbox unheard.
        backlogged: whether the controller's mailbox is full: heartbeats then wait to enter it
            (in the links), not stamped yet.
        launcher: starts local hosts detached (a replica's); they link as joined hosts do,
            and every host of the pool is then reached over a link.
    """

    def __init__(
        self,
        owner: Actor,
        factory: HostFactory,
        settings: Settings,
        state_dir: Path,
        on_dead: Callable[[list[tuple[Host, str]]], Awaitable[None]],
        closing: Callable[[], bool] = lambda: False,
        busy_since: Callable[[], float | None] = lambda: None,
        backlogged: Callable[[], bool] = lambda: False,
        launcher: HostLauncher | None = None,
    ) -> None:
        self.owner = owner
        self.factory = factory
        self.launcher = launcher
        self.settings = settings
        self.state_dir = state_dir
        self.on_dead = on_dead
        self.closing = closing
        self.busy_since = busy_since
        self.backlogged = backlogged
        #: how often the watch looks, and how late it may wake or how long one message may hold
        #: the mailbox before the controller counts itself as not listening
        s = settings
        self.watch_period = max(0.05, min(s.host_heartbeat_interval, s.host_failure_timeout / 4))
        self.stalls = 0
        listened_until()  # from now on the controller's idle moments are noted
        self.now = clock()  # anyio.current_time, quicker (read for every heartbeat)
        self.hosts: dict[str, Host] = {}
        self.next_number = 1
        #: packages packed for joined hosts: (role code folder, site folders) -> (digest, tar)
        self._packed: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, Path]] = {}
        self._packing = anyio.Lock()
        #: the isolation table of this process its local hosts enter their VMs in ("": none)
        self.firewall = ""

    async def open_firewall(self) -> None:
        """Make the isolation table our local host processes enter their VMs' ports in (see
        fabric.network.isolation), or say once why VMs are not isolated."""
        if self.factory is not spawn_host_process and self.launcher is None:
            return  # stand-in hosts (tests)
        why = isolation.unavailable()
        if why is None and self.launcher is not None:
            # A replica's local hosts outlive it: they would outlive its table.
            why = "a replica's local hosts are not isolated (not done yet)"
        if why is None:
            try:
                self.firewall = await isolation.open_table()
            except OSError as exc:
                why = str(exc)
        if why:
            log.warning("VMs are not isolated from each other on this machine's network: %s", why)
        else:
            log.info("VM ports are open to root and their deployment only (nft table inet %s)", self.firewall)

    async def close_firewall(self) -> None:
        """Delete the isolation table (its hosts stopped first)."""
        name, self.firewall = self.firewall, ""
        if name:
            with anyio.CancelScope(shield=True), contextlib.suppress(OSError):
                await isolation.close_table(name)

    def add(self, record: HostRecord) -> Host:
        """Register a host (planned or recovered); it is spawned on first use."""
        host = Host(record, last_seen=anyio.current_time(), linked=self.launcher is not None)
        self.hosts[record.id] = host
        self.next_number = max(self.next_number, record.number + 1)
        return host

    def live(self) -> list[Host]:
        """Hosts not declared dead, by number."""
        return sorted((h for h in self.hosts.values() if h.alive), key=lambda h: h.record.number)

    def slots(self, used: dict[str, int]) -> list[HostSlot]:
        """The live hosts as placement sees them, given the cores used on each."""
        return [
            HostSlot(
                id=h.id,
                number=h.record.number,
                cores=h.record.cores,
                fault_domain=h.record.fault_domain,
                used=used.get(h.id, 0),
                cordoned=bool(h.record.cordoned_at),
            )
            for h in self.live()
            if h.usable
        ]

    async def ref(self, host_id: str) -> Ref:
        """The running host's Ref, spinning the host up on first use.

        Raises:
            HostStartFailed: the host's process failed to start.
            HostUnavailable: the host is dead or unknown.
        """
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            raise HostUnavailable(f"host {host_id} is not available")
        if host.joined:
            if host.ref is None and host.launched:
                await self._launch(host)
            if host.ref is None:
                raise HostUnavailable(f"joined host {host_id} has not linked to this controller yet")
            return host.ref
        if host.ref is not None:
            return host.ref  # running: no lock to take (one ask per instance at scale)
        async with host.spawn_lock:
            if host.ref is None:
                config = self._host_config(host, firewall=self.firewall)
                try:
                    host.ref = await self.factory(self.owner, config)
                except Exception as exc:
                    log.error("host %s did not start: %s", host.id, exc)
                    where = self.state_dir / "hosts" / host.id / "host.out.log"
                    raise HostStartFailed(f"host {host.id} did not start ({exc}); see {where}") from exc
                host.last_seen = anyio.current_time()
                host.pid = host.ref.pid or 0
                # A line each for a few hosts; at scale a debug line (10,000 were 2% of the
                # controller's CPU placing 20,000 instances).
                level = logging.INFO if len(self.hosts) <= QUIET_HOSTS_ABOVE else logging.DEBUG
                log.log(level, "host %s is up (pid %s)", host.id, host.pid)
                self.owner.start_soon(self._watch_exit, host, host.ref)
            if not host.alive:
                raise HostUnavailable(f"host {host.id} died")
            return host.ref

    def _host_config(self, host: Host, *, firewall: str) -> HostConfig:
        """What a host agent for ``host`` starts with (``firewall``: the isolation table, or "")."""
        return HostConfig(
            host_id=host.id,
            cores=host.record.cores,
            state_dir=str(self.state_dir),
            settings=self.settings,
            fault_domain=host.record.fault_domain,
            firewall=firewall,
        )

    async def _launch(self, host: Host) -> None:
        """Start a launched local host (unless it runs) and wait for it to link.

        Raises:
            HostStartFailed: it could not start, or did not link in time.
        """
        assert self.launcher is not None
        config = self._host_config(host, firewall="")  # a launched host outlives us: no table of ours
        where = self.state_dir / "hosts" / host.id / "host.out.log"
        async with host.spawn_lock:
            if host.ref is not None:
                return
            host.launching = True
            try:
                await self.launcher(config)
                # Heard: its link is up (one that runs already links by itself, with backoff).
                with anyio.move_on_after(max(30.0, self.settings.host_failure_timeout)):
                    await host.heard.wait()
            except Exception as exc:
                log.error("host %s did not start: %s", host.id, exc)
                raise HostStartFailed(f"host {host.id} did not start ({exc}); see {where}") from exc
            finally:
                host.launching = False
                host.last_seen = max(host.last_seen, self.now())  # its silence counts from now
            if host.ref is None:
                raise HostStartFailed(f"host {host.id} did not link in time; see {where}")

    async def ask(self, host_id: str, message: Request[Answer], timeout: float) -> Answer:
        """Ask a host; a host that is gone raises HostUnavailable (its instances will heal).

        Raises:
            HostUnavailable: the host is dead or went away while asked.
            ActorError: the host refused the request.
            AskTimeout: no answer in ``timeout`` seconds.
        """
        ref = await self.ref(host_id)
        try:
            host = self.hosts[host_id]
            if not host.joined:
                return await ref.ask(message, timeout=timeout)
            shipped = await self._shipped(host, ref, message)
            try:
                return await ref.ask(shipped, timeout=timeout)
            except ActorError as exc:
                if exc.caused_by(PackageMissing) is None:
                    raise
                # It pruned the package since it was last shipped or asked for: again, asking.
                host.packages.discard(getattr(shipped, "package", ""))
                return await ref.ask(await self._shipped(host, ref, message), timeout=timeout)
        except ActorDead as exc:
            if self.hosts[host_id].joined:
                # Its link dropped: what it runs is checked again when it is next heard.
                self.hosts[host_id].boot = ""
            raise HostUnavailable(f"host {host_id} went away: {exc}") from exc

    # -- joined hosts ------------------------------------------------------------------------------

    def heard_joined(
        self, beat: HostHeartbeat, agent: Ref, at: float | None = None
    ) -> tuple[Host, HostRecord | None, bool]:
        """A joined host's heartbeat: learn the host (the first time), revive it (it was declared
        dead), note it was heard (``at``, when it was read off its link; else now). Returns the
        host, its record when it must be stored (new or revived), and whether its agent is a new
        incarnation (started since last heard)."""
        host = self.hosts.get(beat.host_id)
        record: HostRecord | None = None
        if host is None or not host.alive:
            if host is None:
                record = HostRecord(
                    id=beat.host_id, pool=self.pool_name(), number=self.next_number, cores=0, fault_domain=0
                )
            else:
                record = host.record
            record = msgspec.structs.replace(record, cores=beat.cores, fault_domain=beat.fault_domain)
            what = "is back" if host is not None else "joined the pool"
            log.info("host %s (%s, %d cores) %s", beat.host_id, beat.address, beat.cores, what)
            host = self.add(record)
        elif (host.record.cores, host.record.fault_domain) != (beat.cores, beat.fault_domain):
            record = msgspec.structs.replace(host.record, cores=beat.cores, fault_domain=beat.fault_domain)
            host.record = record
        fresh = host.boot != beat.boot
        if fresh:
            host.packages.clear()
        host.ref, host.boot, host.pid = agent, beat.boot, beat.pid
        host.heard.set()
        host.address, host.memory_mb = beat.address, beat.memory_mb
        now = self.now()
        seen = now if at is None else min(at, now)
        host.last_seen, host.heard_at = seen, time.time() - (now - seen)
        return host, record, fresh

    def pool_name(self) -> str:
        """The pool's name (from its hosts' records; "local" before any)."""
        return next((h.record.pool for h in self.hosts.values()), "local")

    def address_of(self, host_id: str) -> str:
        """The address a host's instances listen on: a joined host's own, "" for a local host."""
        host = self.hosts.get(host_id)
        return host.address if host is not None and host.joined else ""

    def describe(self) -> list[HostInfo]:
        """Every host as it stands (local and joined), by number."""
        now = anyio.current_time()
        wall = time.time()
        return [
            HostInfo(
                id=h.id,
                kind="joined" if h.joined and not h.launched else "local",
                address=h.address if h.joined else "127.0.0.1",
                cores=h.record.cores,
                memory_mb=h.memory_mb,
                fault_domain=h.record.fault_domain,
                last_heard=h.heard_at or (wall - (now - h.last_seen) if h.ref is not None else 0.0),
                alive=h.alive,
                running=h.ref is not None and h.alive,
            )
            for h in sorted(self.hosts.values(), key=lambda h: h.record.number)
        ]

    async def _shipped(self, host: Host, ref: Ref, message: Any) -> Any:
        """A StartGuest or RestartGuest for a joined host, once the host holds its package
        (shipped in chunks the first time), naming the package's digest."""
        if isinstance(message, ApplyGuestEnvironment) and message.instance_id in host.services:
            # A new environment may name new certificates (a rotation): the host needs them first.
            env = message.change.environment
            async with host.ship_lock:
                await self._certificates(host, ref, host.services[message.instance_id], env)
            return message
        config = message.config if isinstance(message, (StartGuest, RestartGuest)) else None
        if not isinstance(config, GuestConfig):
            return message
        host.services[config.instance_id] = config.hosted_service
        key = (config.role_code_dir, tuple(sorted(config.site_dirs.items())))
        async with self._packing:
            packed = self._packed.get(key)
            if packed is None:
                if len(self._packed) >= 256:
                    self._packed.clear()  # bounded: packing again costs one read of the files
                cache = self.state_dir / "cluster" / "packages"
                packed = await anyio.to_thread.run_sync(pack, config.role_code_dir, config.site_dirs, cache)
                self._packed[key] = packed
        digest, path = packed
        if digest in host.packages and not config.environment.certificates:
            # Held by its agent since it was last heard anew: no round trip (a package it pruned
            # since is refused with PackageMissing, and shipped again: see ask).
            return msgspec.structs.replace(message, package=digest)
        async with host.ship_lock:
            if digest not in host.packages:
                if not await ref.ask(HasPackage(digest), timeout=30.0):
                    await self._send(host, ref, digest, path)
                host.packages.add(digest)
            await self._certificates(host, ref, config.hosted_service, config.environment)
        return msgspec.structs.replace(message, package=digest)

    async def _certificates(self, host: Host, ref: Ref, service: str, env: RoleEnvironmentData) -> None:
        """The hosted service's certificates an environment names, in the joined host's own
        store (its VMs install them from there); sent each time, since the host removes those
        no VM of its uses (fabric.host.prune)."""
        missing = sorted({c.thumbprint for c in env.certificates.values()})
        if not missing:
            return
        store = CertificateStore(self.state_dir)

        def read() -> list[CertificateCopy]:
            copies = []
            for thumbprint in missing:
                record = store.get(service, thumbprint)
                if record is not None:
                    key = store.key_pem(service, thumbprint)
                    copies.append(CertificateCopy(certificate_pem=record.certificate_pem, key_pem=key))
            return copies

        copies = await anyio.to_thread.run_sync(read)
        await ref.ask(PutCertificates(service=service, certificates=copies), timeout=30.0)

    async def prune_packed(self) -> list[str]:
        """Remove the packed tars no deployment refers to any more (their role's folder is gone:
        the deployment was deleted or upgraded past it) once unused for package_prune_after."""
        async with self._packing:
            packed = dict(self._packed)

            def prune() -> tuple[dict[Any, tuple[str, Path]], list[str]]:
                live = {k: v for k, v in packed.items() if Path(k[0]).is_dir()}
                cache = self.state_dir / "cluster" / "packages"
                grace = self.settings.package_prune_after
                return live, prune_tars(cache, {d for d, _ in live.values()}, grace)

            self._packed, removed = await anyio.to_thread.run_sync(prune)
        if removed:
            log.info("removed %d packed package(s) no deployment uses", len(removed))
        return removed

    async def _send(self, host: Host, ref: Ref, digest: str, path: Path) -> None:
        total = (await anyio.Path(path).stat()).st_size
        log.info("shipping package %s (%d bytes) to host %s", digest[:12], total, host.id)
        async with await anyio.open_file(path, "rb") as f:
            offset = 0
            while offset < total:
                data = await f.read(MAX_CHUNK // 2)
                chunk = PackageChunk(digest=digest, offset=offset, total=total, data=data)
                await ref.ask(chunk, timeout=60.0)
                offset += len(data)

    def heard(self, host_id: str, pid: int = 0, *, stamp: bool = True) -> bool:
        """A heartbeat arrived; False when the host is unknown or already declared dead.
        ``stamp=False``: it was stamped as it entered the mailbox (FabricController), not now."""
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            return False
        if stamp:
            host.last_seen = self.now()
        if pid:
            host.pid = pid
        return True

    def silent(self) -> list[Host]:
        """Running hosts (and joined ones, heard or not) silent for host_failure_timeout up to
        the last time the controller had read all it was sent (fabric.controller.idle_clock),
        by number (one pass over the hosts; only the silent ones are sorted). A controller busy
        for ever (a load balancer in its process at full speed) still declares a host silent
        for three timeouts."""
        now = anyio.current_time()
        limit = self.settings.host_failure_timeout
        until = min(now, max(listened_until(), now - SATURATED_GRACE * limit))
        found = [
            h
            for h in self.hosts.values()
            if h.alive and (h.ref is not None or h.joined) and not h.launching and until - h.last_seen > limit
        ]
        return sorted(found, key=lambda h: h.record.number)

    async def declare_dead(self, host: Host, why: str) -> None:
        """Mark the host dead, kill its process, and hand it to ``on_dead`` (once)."""
        await self.declare_all([(host, why)])

    async def declare_all(self, dying: list[tuple[Host, str]]) -> None:
        """``declare_dead`` for many hosts at once: one ``on_dead`` call for them all (at
        10,000 hosts, moving each dead host's instances in a pass of its own, with a write
        per instance, held the loop while more heartbeats went unread: hosts died in cascade)."""
        if self.closing():
            return
        gone = []
        for host, why in dying:
            if not host.alive:
                continue
            host.alive = False
            gone.append((host, why))
            log.error("host %s is dead (%s); moving its instances", host.id, why)
            ref = host.ref
            if host.joined:
                host.boot = ""  # when it comes back, it is heard as new (it stops what it no longer owns)
            elif ref is not None:
                pid = ref.pid
                ref.request_stop()
                if pid and pid != os.getpid():
                    # A hung host would sit through the whole stop ladder; its guests must not keep
                    # serving beside their replacements, so it goes at once (its guests die with it).
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if gone:
            await self.on_dead(gone)

    async def _watch_exit(self, host: Host, ref: Ref) -> None:
        reason = await ref.join()
        if reason is not None and host.alive and host.ref is ref:
            await self.declare_dead(host, f"its process ended: {reason}")

    def deaf_for(self, woke_late: float) -> float:
        """How long the controller could not hear its hosts just now (0: it listened): its loop
        stalled (the watch woke ``woke_late`` seconds late), a message held its mailbox, or the
        mailbox is full (counted as a watch period and more)."""
        busy = self.busy_since()
        held = anyio.current_time() - busy if busy is not None else 0.0
        deaf = max(woke_late, held, 2 * self.watch_period if self.backlogged() else 0.0)
        return deaf if deaf > self.watch_period else 0.0

    def grace(self, why: str | None) -> None:
        """Give every live host a fresh host_failure_timeout from now (the controller was deaf);
        ``why`` is logged (None: the same deafness goes on)."""
        now = anyio.current_time()
        for host in self.hosts.values():
            if host.alive:
                host.last_seen = max(host.last_seen, now)
        if why is not None:
            self.stalls += 1
            log.warning("%s; no host is blamed: each gets a fresh grace period", why)

    async def watch(self) -> None:
        """Declare dead every host silent for too long, for ever (run as a background task)."""
        period = self.watch_period
        due = anyio.current_time() + period
        was_deaf = False
        while True:
            await anyio.sleep_until(due)
            late = anyio.current_time() - due
            deaf = self.deaf_for(late)
            if deaf:
                # Heartbeats may sit unread in the mailbox or the link: not the hosts' fault.
                what = (
                    "its event loop stalled"
                    if late > period
                    else "its mailbox was full"
                    if self.backlogged()
                    else "one message held its mailbox"
                )
                self.grace(None if was_deaf else f"the controller did not listen for {deaf:.1f} s ({what})")
            else:  # a death sentence only while the controller listens
                now = anyio.current_time()
                dying = [(h, f"no heartbeat for {now - h.last_seen:.1f} s") for h in self.silent()]
                if dying:
                    await self.declare_all(dying)
            was_deaf = bool(deaf)
            due = anyio.current_time() + period

    async def stop(self, host_id: str) -> None:
        """Stop a host gracefully (its guests stop first) and forget it."""
        host = self.hosts.pop(host_id, None)
        if host is not None and host.ref is not None:
            host.alive = False
            await host.ref.stop()
