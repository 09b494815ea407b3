"""The controller's side of remote hosts (``fabric serve --listen ADDRESS:PORT``): the cluster
CA, the host port (actor links under mutual TLS, each host named by its certificate), the join
port beside it (``PORT + 1``), and the roster of joined hosts.

The roster asks each linked host to describe itself every ``host_heartbeat_interval``; the
last answer's time is its heartbeat. A host's agent (fabric.host.remote) reports to
``fabric-hosts`` (HostRelay), which hands its heartbeats and status changes to the controller. It is written to ``<state>/cluster/hosts.json`` (what
``GET /cluster/hosts`` reads), and ``<state>/cluster/listen`` names the host port.

Each controller replica names its own host port in the database's replica table
(fabric.replica.registry); the one that leads (and listens) sends every linked host the list
(ControllerAddresses) when it links and when the list changes, so that a host whose link drops
finds the next leader.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import msgspec

from actors import (
    Actor,
    ActorDead,
    ActorError,
    ActorSystem,
    AskTimeout,
    LinkOptions,
    Listener,
    MailboxFull,
    Peer,
    Ref,
    ServerTLS,
)
from fabric.cluster.admission import Admission
from fabric.cluster.ca import ClusterCA, write_private
from fabric.cluster.join import HostJoined, JoinService, server_context
from fabric.cluster.node import AGENT, MAX_CONTROLLERS, ControllerAddresses, GetHostInfo, HostInfo
from fabric.cluster.revocations import Revocations
from fabric.cluster.tokens import TokenStore
from fabric.controller import shared_folder
from fabric.controller.chaos.joined import hang_undone
from fabric.host.messages import (
    GetHostSettings,
    HostHeartbeat,
    InstanceStatusChanged,
    InstanceStatusesChanged,
    ReportKey,
)
from fabric.host.remote import REPORTS, ControllerSettings, JoinedLinkLost, JoinedReport
from fabric.settings import Settings

log = logging.getLogger("fabric.cluster")

CLUSTER_DIR = "cluster"
#: seconds a linked host's reports may come without the key fabric-hosts sent it (at least 4
#: heartbeat intervals) before it is warned of: its first ones, and all after a failover
KEY_GRACE = 10.0
LISTEN_FILE = "listen"
HOSTS_FILE = "hosts.json"


def cluster_dir(state_dir: Path) -> Path:
    """``<state>/cluster``: the CA, the tokens, the roster."""
    return state_dir / CLUSTER_DIR


def read_listen(state_dir: Path) -> str:
    """The host port ``ADDRESS:PORT`` a running fabric listens on, or "" (no --listen)."""
    try:
        return (cluster_dir(state_dir) / LISTEN_FILE).read_text().strip()
    except FileNotFoundError:
        return ""


class JoinedHostView(msgspec.Struct, frozen=True, kw_only=True):
    """A joined host as `fabric hosts` shows it."""

    name: str
    address: str
    cores: int
    memory_mb: int
    fault_domain: int
    connected: bool
    #: Unix time of its last heartbeat (0: never)
    last_seen: float
    cert_expires: float
    pid: int = 0


def read_hosts(state_dir: Path) -> list[JoinedHostView]:
    """The roster as last written (empty before any host joined)."""
    try:
        return msgspec.json.decode(
            (cluster_dir(state_dir) / HOSTS_FILE).read_bytes(), type=list[JoinedHostView]
        )
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return []


#: the other replicas' host ports, read again each heartbeat (None: not known now, keep the last)
OtherReplicas = Callable[[], Awaitable[list[str] | None]]


class Replicas:
    """Tells every linked host where the controller's replicas listen (ControllerAddresses)."""

    def __init__(self, settings: Settings, others: OtherReplicas | None = None) -> None:
        self.settings = settings
        self.others = others
        self.own = ""
        self.addresses: list[str] = []
        self.peers: dict[str, Peer] = {}

    async def start(self, host: str, port: int) -> None:
        """Know this replica's own host port, and read the others'."""
        self.own = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.addresses = await self._read()

    async def _read(self) -> list[str]:
        """Every replica's host port, this one's first (at most MAX_CONTROLLERS)."""
        listed = None if self.others is None else await self.others()
        if listed is None:
            return self.addresses or [self.own]
        found = [self.own]
        found += [a for a in listed if a and a not in found and len(a) <= 300]
        return found[:MAX_CONTROLLERS]

    def connected(self, peer: Peer) -> None:
        """A host linked: tell it now, with the settings this controller runs with."""
        self.peers[peer.node] = peer
        self._tell(peer)
        with contextlib.suppress(ActorDead, MailboxFull):
            peer.ref("host").tell_nowait(ControllerSettings(self.settings))

    def _tell(self, peer: Peer) -> None:
        with contextlib.suppress(ActorDead, MailboxFull):
            peer.ref("host").tell_nowait(ControllerAddresses(addresses=self.addresses, leader=self.own))

    async def watch(self) -> None:
        """Read the list again each heartbeat interval; tell every linked host when it changed."""
        while True:
            await anyio.sleep(self.settings.host_heartbeat_interval)
            found = await self._read()
            if found != self.addresses:
                self.addresses = found
                for peer in list(self.peers.values()):
                    if peer.connected:
                        self._tell(peer)


class Roster:
    """The joined hosts: who joined, who is linked, when each was last heard."""

    def __init__(self, folder: Path, settings: Settings) -> None:
        self.path = folder / HOSTS_FILE
        self.settings = settings
        # From the last run: none is linked until it links again.
        self.hosts: dict[str, JoinedHostView] = {
            h.name: msgspec.structs.replace(h, connected=False) for h in read_hosts(folder.parent)
        }
        self.peers: dict[str, Peer] = {}
        self._saved = b""
        self._writes = anyio.CapacityLimiter(1)
        #: the host port's hello check: removed hosts leave the roster, revoked links are cut
        self.admission: Admission | None = None

    async def joined(self, joined: HostJoined) -> None:
        """A host joined or renewed (from the join port): recorded, and written (``store``)."""
        old = self.hosts.get(joined.name)
        self.hosts[joined.name] = JoinedHostView(
            name=joined.name,
            address=joined.address.rpartition(":")[0],
            cores=joined.cores or (old.cores if old else 0),
            memory_mb=joined.memory_mb or (old.memory_mb if old else 0),
            fault_domain=joined.fault_domain if joined.cores else (old.fault_domain if old else 0),
            connected=old.connected if old else False,
            last_seen=old.last_seen if old else 0.0,
            cert_expires=joined.cert_expires,
            pid=old.pid if old else 0,
        )
        await self.store()

    def connected(self, peer: Peer) -> None:
        """A host's link came up (the listener's on_connect)."""
        self.peers[peer.node] = peer

    async def watch(self) -> None:
        """Hear every linked host each heartbeat interval, and keep the file current."""
        interval = self.settings.host_heartbeat_interval
        while True:
            self._forget_removed()
            async with anyio.create_task_group() as tg:
                for name, peer in list(self.peers.items()):
                    tg.start_soon(self._hear, name, peer, interval * 2)
            await self.store()
            await anyio.sleep(interval)

    def _forget_removed(self) -> None:
        """Removed hosts (fabric host remove) leave the roster; a link they hold is cut."""
        if self.admission is None:
            return
        for name in [n for n in self.hosts if self.admission.revocations.removed(n)]:
            del self.hosts[name]
        for name, peer in list(self.peers.items()):
            if peer.connected and self.admission.revoked(name):
                log.warning("cut the link of host %r: its certificate was revoked", name)
                peer.cut()

    async def _hear(self, name: str, peer: Peer, timeout: float) -> None:
        old = self.hosts.get(name)
        if not peer.connected:
            if old is not None and old.connected:
                self.hosts[name] = msgspec.structs.replace(old, connected=False)
            return
        try:
            info: HostInfo = await peer.ref("host").ask(GetHostInfo(), timeout=timeout)
        except (ActorError, ActorDead, AskTimeout) as exc:  # its link may drop while asked
            log.warning("joined host %r did not answer: %s", name, exc)
            return
        if old is None:  # linked with a certificate from before the roster was lost
            old = JoinedHostView(
                name=name,
                address="",
                cores=0,
                memory_mb=0,
                fault_domain=0,
                connected=False,
                last_seen=0,
                cert_expires=0,
            )
        self.hosts[name] = msgspec.structs.replace(
            old,
            cores=info.cores,
            memory_mb=info.memory_mb,
            fault_domain=info.fault_domain,
            connected=True,
            last_seen=time.time(),
            cert_expires=info.cert_expires,
            pid=info.pid,
        )

    async def store(self) -> None:
        """``save`` in a worker thread, never in the event loop (it fsyncs), one at a time: each
        takes the roster as it is when it runs (a list made under the GIL), so the last write
        holds every update before it and none is written over by an older one."""
        await anyio.to_thread.run_sync(self.save, limiter=self._writes)

    def save(self) -> None:
        """Write the roster (owner-only) when it changed."""
        data = msgspec.json.encode(sorted(self.hosts.values(), key=lambda h: h.name))
        if data != self._saved and shared_folder.acting():  # a replica's term ended: the next leader's
            write_private(self.path, data)
            self._saved = data


class HostRelay(Actor):
    """``fabric-hosts``: what joined hosts' agents tell the controller, and their settings.

    Only a host whose link is up is heard, under its own name (its certificate's), with the
    key this relay gave it over that link (ReportKey): a host cannot report for another.
    Anything else a host sends here is dropped (a host may not command the controller).
    """

    def __init__(
        self, controller: Ref, listener: Listener, settings: Settings, admission: Admission | None = None
    ) -> None:
        self.controller = controller
        self.listener = listener
        self.settings = settings
        self._warned: set[str] = set()
        #: host name -> the key its reports carry; when each was last sent (at most once a second)
        self.keys: dict[str, str] = {}
        self._sent: dict[str, float] = {}
        #: the host port's hello check: reports over a revoked link are dropped
        self.admission = admission
        #: (host, address) pairs whose heartbeats were refused (logged once each)
        self._refused: set[tuple[str, str]] = set()
        #: since when each host's reports come without its key; hosts warned of for it
        self._unkeyed_since: dict[str, float] = {}
        self._unkeyed: set[str] = set()

    def _keyed(self, name: str, key: str, peer: Peer) -> bool:
        """Whether a report carries the host's key; if not, (re)send the key over its own link.

        A host's first reports on a link carry no key, or the last leader's (this relay's keys
        are new after a failover): expected until it has had the key a while, so only a debug
        line; one still without it then is warned of, once."""
        mine = self.keys.setdefault(name, secrets.token_hex(16))
        if key and secrets.compare_digest(key, mine):
            self._unkeyed_since.pop(name, None)
            return True
        now = time.monotonic()
        since = self._unkeyed_since.setdefault(name, now)
        if now - since < max(KEY_GRACE, 4 * self.settings.host_heartbeat_interval):
            log.debug("fabric-hosts: a report of %r without its key yet (sent over its link)", name)
        elif name not in self._unkeyed and len(self._unkeyed) < 1000:
            self._unkeyed.add(name)
            log.warning("fabric-hosts dropped the reports of host %r: not with the key it was given", name)
        if now - self._sent.get(name, -10.0) >= 1.0:
            self._sent[name] = now
            with contextlib.suppress(ActorDead, MailboxFull):
                peer.ref(AGENT).tell_nowait(ReportKey(mine))
        return False

    def _refused_address(self, name: str, address: str) -> bool:
        """Whether a host advertises an address its link does not come from (the load balancer
        would send its endpoints' clients there: the controller machine's own loopback, say)."""
        why = self.admission.address_refusal(name, address) if self.admission is not None else None
        if why is not None and (name, address) not in self._refused and len(self._refused) < 1000:
            self._refused.add((name, address))
            log.warning("fabric-hosts refused the heartbeats of a host: %s", why)
        return why is not None

    def _linked(self, name: str) -> Peer | None:
        peer = self.listener.peers.get(name)
        if self.admission is not None and self.admission.revoked(name):
            return None  # removed: heard no more, though its link is not cut yet
        return peer if peer is not None and peer.connected else None

    async def receive(self, message: object) -> object:
        match message:
            case GetHostSettings():
                return self.settings
            case HostHeartbeat(host_id=name, key=key):
                peer = self._linked(name)
                if peer is not None and self._refused_address(name, message.address):
                    return None
                if peer is not None and self._keyed(name, key, peer):
                    report = JoinedReport(heartbeat=message, agent=peer.ref(AGENT), at=anyio.current_time())
                    await self.controller.tell(report)
                if peer is not None:
                    return None
            case (
                InstanceStatusChanged(host_id=name, key=key) | InstanceStatusesChanged(host_id=name, key=key)
            ):
                peer = self._linked(name)
                if peer is not None and self._keyed(name, key, peer):
                    await self.controller.tell(message)
                if peer is not None:
                    return None
        what = type(message).__name__
        if what not in self._warned and len(self._warned) < 100:
            self._warned.add(what)
            log.warning("fabric-hosts dropped a %s (not from a linked host, or not a report)", what)
        return None


def _held(roster: Roster, revocations: Revocations, name: str) -> bool:
    """Whether a joined host holds ``name``: its certificate is valid (not expired, not revoked)."""
    host = roster.hosts.get(name)
    return host is not None and host.cert_expires > time.time() and not revocations.removed(name)


def _linked(roster: Roster, replicas: Replicas, peer: Peer) -> None:
    roster.connected(peer)
    replicas.connected(peer)


def _unlinked(controller: Ref, peer: Peer) -> None:
    """A host's link ended: the controller takes its instances out of rotation at once (unless
    it is up again already; its next heartbeat brings them back)."""
    if not peer.connected:
        with contextlib.suppress(ActorDead, MailboxFull):
            controller.tell_nowait(JoinedLinkLost(peer.node))


async def serve_cluster(
    system: ActorSystem,
    state_dir: Path,
    settings: Settings,
    host: str,
    port: int,
    *,
    controller: Ref | None = None,
    options: LinkOptions | None = None,
    replicas: OtherReplicas | None = None,
    task_status: anyio.abc.TaskStatus[Roster] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Open the host port on ``host:port`` and the join port on ``port + 1`` until cancelled;
    with ``controller``, joined hosts' agents report to it (through ``fabric-hosts``); with
    ``replicas``, the hosts learn the other controller replicas' host ports from it.

    Raises:
        OSError: a port cannot be opened.
    """
    folder = cluster_dir(state_dir)
    told = Replicas(settings, replicas)
    await told.start(host, port)
    ca = await anyio.to_thread.run_sync(ClusterCA.open, folder)
    cert, key = await anyio.to_thread.run_sync(ca.server_files, host)
    roster = Roster(folder, settings)
    tokens = TokenStore(folder)
    revocations = Revocations(folder)
    admission = roster.admission = Admission(revocations)
    service = JoinService(
        ca,
        tokens,
        port,
        settings.host_certificate_lifetime,
        roster.joined,
        hang_undone=hang_undone,
        revocations=revocations,
        held=partial(_held, roster, revocations),
    )
    context = await anyio.to_thread.run_sync(server_context, cert, key, ca.cert_path)
    listener = await system.listen(
        host,
        port,
        tls=ServerTLS(cert, key, ca.cert_path),
        name="controller",
        options=options
        or LinkOptions(ping_interval=settings.link_ping_interval, ping_timeout=settings.link_ping_timeout),
        on_connect=partial(_linked, roster, told),
    )
    listener.admit = admission.admit
    if listener.address[1] != port:  # port 0: the one the system chose
        await told.start(host, listener.address[1])
    if controller is not None:
        relay = await system.spawn(lambda: HostRelay(controller, listener, settings, admission), name=REPORTS)
        system.register(REPORTS, relay)
        listener.on_disconnect = partial(_unlinked, controller)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve, host, port + 1, context)
            (folder / LISTEN_FILE).write_text(f"{host}:{listener.address[1]}\n")
            tg.start_soon(roster.watch)
            tg.start_soon(told.watch)
            log.info("host port %s:%d, join port %d (CA %s)", host, listener.address[1], port + 1, ca.hash)
            task_status.started(roster)
    finally:
        if shared_folder.acting():  # a replica's term ended: the file may name the next leader's port
            (folder / LISTEN_FILE).unlink(missing_ok=True)
        await listener.aclose()
