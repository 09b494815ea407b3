"""The controller's side of remote hosts (``fabric serve --listen ADDRESS:PORT``): the cluster
CA, the host port (actor links under mutual TLS, each host named by its certificate), the join
port beside it (``PORT + 1``), and the roster of joined hosts.

The roster asks each linked host to describe itself every ``host_heartbeat_interval``; the
last answer's time is its heartbeat. It is written to ``<state>/cluster/hosts.json`` (what
``GET /cluster/hosts`` reads), and ``<state>/cluster/listen`` names the host port.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import msgspec

from actors import ActorError, ActorSystem, AskTimeout, LinkOptions, Peer, ServerTLS
from fabric.cluster.ca import ClusterCA, write_private
from fabric.cluster.join import HostJoined, JoinService, server_context
from fabric.cluster.node import GetHostInfo, HostInfo
from fabric.cluster.tokens import TokenStore
from fabric.settings import Settings

log = logging.getLogger("fabric.cluster")

CLUSTER_DIR = "cluster"
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

    def joined(self, joined: HostJoined) -> None:
        """A host joined or renewed (from the join port)."""
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
        self.save()

    def connected(self, peer: Peer) -> None:
        """A host's link came up (the listener's on_connect)."""
        self.peers[peer.node] = peer

    async def watch(self) -> None:
        """Hear every linked host each heartbeat interval, and keep the file current."""
        interval = self.settings.host_heartbeat_interval
        while True:
            async with anyio.create_task_group() as tg:
                for name, peer in list(self.peers.items()):
                    tg.start_soon(self._hear, name, peer, interval * 2)
            await anyio.to_thread.run_sync(self.save)
            await anyio.sleep(interval)

    async def _hear(self, name: str, peer: Peer, timeout: float) -> None:
        old = self.hosts.get(name)
        if not peer.connected:
            if old is not None and old.connected:
                self.hosts[name] = msgspec.structs.replace(old, connected=False)
            return
        try:
            info: HostInfo = await peer.ref("host").ask(GetHostInfo(), timeout=timeout)
        except (ActorError, AskTimeout) as exc:
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

    def save(self) -> None:
        """Write the roster (owner-only) when it changed."""
        data = msgspec.json.encode(sorted(self.hosts.values(), key=lambda h: h.name))
        if data != self._saved:
            write_private(self.path, data)
            self._saved = data


async def serve_cluster(
    system: ActorSystem,
    state_dir: Path,
    settings: Settings,
    host: str,
    port: int,
    *,
    options: LinkOptions | None = None,
    task_status: anyio.abc.TaskStatus[Roster] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Open the host port on ``host:port`` and the join port on ``port + 1`` until cancelled.

    Raises:
        OSError: a port cannot be opened.
    """
    folder = cluster_dir(state_dir)
    ca = await anyio.to_thread.run_sync(ClusterCA.open, folder)
    cert, key = await anyio.to_thread.run_sync(ca.server_files, host)
    roster = Roster(folder, settings)
    tokens = TokenStore(folder)
    service = JoinService(ca, tokens, port, settings.host_certificate_lifetime, roster.joined)
    context = await anyio.to_thread.run_sync(server_context, cert, key, ca.cert_path)
    listener = await system.listen(
        host,
        port,
        tls=ServerTLS(cert, key, ca.cert_path),
        name="controller",
        options=options
        or LinkOptions(ping_interval=settings.link_ping_interval, ping_timeout=settings.link_ping_timeout),
        on_connect=roster.connected,
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve, host, port + 1, context)
            (folder / LISTEN_FILE).write_text(f"{host}:{listener.address[1]}\n")
            tg.start_soon(roster.watch)
            log.info("host port %s:%d, join port %d (CA %s)", host, listener.address[1], port + 1, ca.hash)
            task_status.started(roster)
    finally:
        (folder / LISTEN_FILE).unlink(missing_ok=True)
        await listener.aclose()
