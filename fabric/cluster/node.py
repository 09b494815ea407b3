"""A host on another machine: its identity in its state folder, joining, renewing, and keeping
its mutual-TLS link to the controller's host port up (``fabric host join``).

It runs a host agent (fabric.host.remote:RemoteHostAgent, registered as ``agent``) that the
controller reaches over the link: the instances placed here run under the state folder
(``vms/``, ``packages/``, ``hosts/<name>/HostAgent.log``), children of this process.

State folder (owner-only): ``key.pem`` (the key made here for joining, never sent),
``identity.pem`` (the certificate and its key in one file, replaced whole, so that a host killed
while renewing never finds a key that is not its certificate's), ``ca.pem``, and ``join.json``
(its name, the controller's address and ports, and every controller replica's host port).

A replicated controller's leader sends the host every replica's host port when the host links
and whenever they change (ControllerAddresses); when the link drops the host tries them in turn,
with backoff and jitter, until one accepts: only the leader listens there. Its agent and VMs
keep running meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import anyio
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors import (
    Actor,
    ActorDead,
    ActorSystem,
    AskTimeout,
    ClientTLS,
    LinkOptions,
    Peer,
    Ref,
    Request,
    open_system,
)
from fabric.cluster.ca import HOST_NAME, csr_for, key_pem, new_key, validity, verify_signed_by, write_private
from fabric.cluster.join import Join, JoinRefused, Signed, fetch_ca, join, renew, renewal_delay
from fabric.cluster.join_retry import patiently
from fabric.host import hangs, net_faults
from fabric.host.messages import GetHostSettings, HostConfig
from fabric.host.remote import REPORTS, ControllerSettings, RemoteHostAgent
from fabric.network import isolation
from fabric.settings import Settings

log = logging.getLogger("fabric.cluster")

#: the name a joined host registers its host agent under (the controller's Ref to it)
AGENT = "agent"


class JoinState(msgspec.Struct, frozen=True, kw_only=True):
    """What a joined host remembers besides its key and certificates."""

    name: str
    controller: str
    host_port: int
    join_port: int
    cores: int
    fault_domain: int = 0
    #: the address this host's instances listen on ("": the one it reaches the controller from)
    address: str = ""
    #: every controller replica's host port, ``ADDRESS:PORT`` (empty: ``controller:host_port``)
    controllers: list[str] = []


class HostInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A joined host as it describes itself to the controller."""

    name: str
    cores: int
    fault_domain: int
    memory_mb: int
    pid: int
    cert_expires: float


class GetHostInfo(Request[HostInfo], frozen=True, tag=True):
    """Ask a joined host to describe itself (the controller's heartbeat of it)."""


#: the most controller addresses a host keeps
MAX_CONTROLLERS = 16


class ControllerAddresses(msgspec.Struct, frozen=True, tag=True):
    """The leader to a joined host: every controller replica's host port (``ADDRESS:PORT``),
    and its own (the host renews its certificate there)."""

    addresses: list[str]
    leader: str


def memory_mb() -> int:
    """This machine's memory, in MiB (0 when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    except (OSError, ValueError):
        return 0


def check_address(address: str) -> str:
    """An IP address, as given.

    Raises:
        ValueError: not an IPv4 or IPv6 address.
    """
    import ipaddress

    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"--address {address[:80]!r} is not an IP address") from None


def advertised_address(controller: str) -> str:
    """The address of this machine that the controller's machine is reached from (the source
    address of its route there; no packet is sent)."""
    family = socket.AF_INET6 if ":" in controller else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((controller, 9))
        return str(probe.getsockname()[0])


def default_name() -> str:
    """This machine's host name, lower-cased, as a certificate name."""
    name = socket.gethostname().lower().split(".")[0]
    return name if HOST_NAME.match(name) else "host"


@dataclass(frozen=True)
class Identity:
    """A host's state folder."""

    folder: Path

    @property
    def key(self) -> Path:
        return self.folder / "key.pem"

    @property
    def cert(self) -> Path:
        """The certificate, then its key (both a certificate file and a key file for ssl)."""
        return self.folder / "identity.pem"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def state_file(self) -> Path:
        return self.folder / "join.json"

    def state(self) -> JoinState | None:
        """What was saved at the last join, or None before the first."""
        try:
            return msgspec.json.decode(self.state_file.read_bytes(), type=JoinState)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    def expires(self) -> float:
        """When the certificate ends (Unix time); 0 when there is none."""
        try:
            return validity(self.cert.read_bytes())[1].timestamp()
        except (OSError, ValueError):
            return 0.0

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The host's key, made (owner-only) the first time."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        if self.key.exists():
            key = serialization.load_pem_private_key(self.key.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return key
        key = new_key()
        write_private(self.key, key_pem(key))
        return key

    def save(self, cert: str, ca: str, state: JoinState) -> None:
        """Keep a certificate (after checking it is signed by the CA), the CA, and the state."""
        verify_signed_by(cert.encode(), ca.encode())
        write_private(self.ca, ca.encode())
        write_private(self.cert, cert.encode() + self.key.read_bytes())
        write_private(self.state_file, msgspec.json.encode(state))


def join_address(host: str, port: int) -> str:
    """(host, port) as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(address: str, default_port: int = 7443, *, zero: bool = False) -> tuple[str, int]:
    """``HOST[:PORT]`` as (host, port); with ``zero``, port 0 too (a controller replica then
    chooses a free pair).

    Raises:
        ValueError: the port is not a number from 1 (0 with ``zero``) to 65534 (the join port
            is PORT + 1).
    """
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = address, str(default_port)
    low = 0 if zero else 1
    if not port.isdigit() or not low <= int(port) <= 65534:
        raise ValueError(f"{address!r} is not ADDRESS:PORT with a port from {low} to 65534")
    return host.strip("[]"), int(port)


async def ensure_joined(
    identity: Identity,
    address: str | None,
    *,
    token: str | None,
    ca_hash: str | None,
    name: str,
    cores: int,
    fault_domain: int,
    advertise: str = "",
    patience: float = 0.0,
) -> JoinState:
    """A valid certificate in the state folder: the one there, or a new one bought with the token
    (tried again for ``patience`` seconds while the join port does not answer).

    Raises:
        JoinRefused: no valid certificate and no token (or a refused one, or a wrong CA hash).
    """
    state = identity.state()
    same = state is not None and (
        address is None
        or split_address(address)[0] == state.controller
        or split_address(address) in controller_addresses(state)  # another replica's host port
    )
    if state is not None and same and identity.expires() > time.time() + 1:
        log.info("host %r uses its certificate (valid until %s)", state.name, time.ctime(identity.expires()))
        if advertise and advertise != state.address:
            state = msgspec.structs.replace(state, address=advertise)
            write_private(identity.state_file, msgspec.json.encode(state))
        return state
    if address is None and state is None:
        raise JoinRefused(f"{identity.folder} holds no joined host: give the controller's ADDRESS")
    if not token or not ca_hash:
        why = "has expired" if state is not None else "is missing"
        raise JoinRefused(
            f"this host's certificate in {identity.folder} {why}: join again with ADDRESS, --token and"
            " --ca-hash (`fabric token create` on the controller prints the command)"
        )
    if address is None:
        raise JoinRefused("give the controller's ADDRESS with the token")
    controller, port = split_address(address)
    key = await anyio.to_thread.run_sync(identity.private_key)
    request = Join(
        token=token,
        csr=csr_for(key, name).decode(),
        cores=cores,
        fault_domain=fault_domain,
        memory_mb=memory_mb(),
    )

    async def attempt() -> Signed:
        ca_pem = await fetch_ca(controller, port + 1, ca_hash)
        return await join(controller, port + 1, ca_pem, request)

    signed = await patiently(attempt, patience, log.warning)
    state = JoinState(
        name=signed.name,
        controller=controller,
        host_port=signed.host_port,
        join_port=port + 1,
        cores=cores,
        fault_domain=fault_domain,
        address=advertise,
    )
    identity.save(signed.cert, signed.ca, state)
    log.info(
        "host %r joined %s; certificate valid until %s", state.name, address, time.ctime(identity.expires())
    )
    return state


async def renew_now(identity: Identity, state: JoinState, place: Controllers | None = None) -> None:
    """Renew the certificate over TLS that shows the current one (at the join port beside the
    host port linked last); a new key each time."""
    key = new_key()
    host, port = place.current if place is not None else (state.controller, state.join_port - 1)
    signed = await renew(
        host,
        port + 1,
        identity.ca.read_bytes(),
        identity.cert,
        identity.cert,
        csr_for(key, state.name),
    )
    verify_signed_by(signed.cert.encode(), identity.ca.read_bytes())
    write_private(identity.cert, signed.cert.encode() + key_pem(key))
    log.info("host %r renewed its certificate; valid until %s", state.name, time.ctime(identity.expires()))


async def keep_renewed(identity: Identity, state: JoinState, place: Controllers | None = None) -> None:
    """Renew at a random point between 70% and 90% of each certificate's life, for ever
    (a failed renewal is tried again soon, while the certificate lasts)."""
    while True:
        start, end = validity(identity.cert.read_bytes())
        # At least a second apart, whatever the clocks say: never a renewal storm.
        await anyio.sleep(max(1.0, renewal_delay(start.timestamp(), end.timestamp())))
        try:
            await renew_now(identity, state, place)
        except (JoinRefused, OSError, ValueError) as exc:
            left = identity.expires() - time.time()
            log.error("renewing the certificate failed (%s); %.0f s of it left", exc, left)
            await anyio.sleep(min(30.0, max(1.0, left / 10)))


class JoinedHost(Actor):
    """What the controller reaches on a joined host (registered as ``host``).

    Args:
        agent: the host agent, once it runs (settings the controller sends go on to it).
    """

    def __init__(
        self,
        identity: Identity,
        state: JoinState,
        place: Controllers | None = None,
        agent: Callable[[], Ref | None] = lambda: None,
    ) -> None:
        self.identity = identity
        self.state = state
        self.place = place or Controllers(state)
        self.agent = agent

    async def receive(self, message: object) -> object:
        match message:
            case ControllerSettings():
                agent = self.agent()
                if agent is not None:  # else it starts soon, asking for them (GetHostSettings)
                    await agent.tell(message)
                return None
            case ControllerAddresses():
                await self.place.update(self.identity, message)
                return None
            case GetHostInfo():
                return HostInfo(
                    name=self.state.name,
                    cores=self.state.cores,
                    fault_domain=self.state.fault_domain,
                    memory_mb=memory_mb(),
                    pid=os.getpid(),
                    cert_expires=self.identity.expires(),
                )
        raise TypeError(f"a joined host does not answer {type(message).__name__}")


class Controllers:
    """Where this host finds the controller: every replica's host port, and the one it linked
    to last (kept in join.json, owner-only, as the leader sends them); ``extra``: more found
    elsewhere (a replica's local host reads them from the state folder it shares)."""

    def __init__(self, state: JoinState, extra: Callable[[], list[tuple[str, int]]] | None = None) -> None:
        self.state = state
        self.current = controller_addresses(state)[0]
        self.extra = extra

    def addresses(self) -> list[tuple[str, int]]:
        """The replicas' host ports, the one linked last first."""
        found = controller_addresses(self.state) + (self.extra() if self.extra is not None else [])
        return [self.current, *dict.fromkeys(a for a in found if a != self.current)]

    async def update(self, identity: Identity, message: ControllerAddresses) -> None:
        """Keep what the leader sent (at most MAX_CONTROLLERS well-formed addresses)."""
        try:
            leader = split_address(message.leader)
            addresses = [join_address(*split_address(a)) for a in message.addresses[:MAX_CONTROLLERS]]
        except ValueError as exc:
            log.warning("the controller sent addresses this host cannot use: %s", exc)
            return
        self.current = leader
        if addresses and addresses != self.state.controllers:
            self.state = msgspec.structs.replace(self.state, controllers=addresses)
            data = msgspec.json.encode(self.state)
            await anyio.to_thread.run_sync(write_private, identity.state_file, data)
            log.info("the controller's replicas listen on %s", ", ".join(addresses))


async def run_host(
    identity: Identity,
    state: JoinState,
    *,
    options: LinkOptions | None = None,
    ready: anyio.Event | None = None,
    extra: Callable[[], list[tuple[str, int]]] | None = None,
    isolate: bool = False,
) -> None:
    """Keep the link to the controller's host port up (a replica's, whichever leads), with this
    host's certificate, and renew it in time; until cancelled. ``extra``: more host ports to try
    (see Controllers). ``isolate``: this process's isolation table holds its VMs' ports (see
    fabric.network.isolation), deleted when it ends."""
    firewall = await open_isolation() if isolate else ""
    try:
        await _run_host(identity, state, options, ready, extra, firewall)
    finally:
        if firewall:
            with anyio.CancelScope(shield=True), contextlib.suppress(OSError):
                await isolation.close_table(firewall)


async def open_isolation() -> str:
    """This process's isolation table, or "" with one log line saying why its VMs are not isolated."""
    why = isolation.unavailable()
    if why is None:
        try:
            return await isolation.open_table()
        except OSError as exc:
            why = str(exc)
    log.warning("this host's VMs are not isolated from each other on its network: %s", why)
    return ""


async def _run_host(
    identity: Identity,
    state: JoinState,
    options: LinkOptions | None,
    ready: anyio.Event | None,
    extra: Callable[[], list[tuple[str, int]]] | None,
    firewall: str,
) -> None:
    options = options or LinkOptions()
    if state.address and not options.source:
        # The controller takes the address its link comes from as the one the host advertises.
        options = replace(options, source=state.address)
    place = Controllers(state, extra)
    # What a killed agent left (a partition would keep it from linking): undone before linking.
    for line in await anyio.to_thread.run_sync(sweep_chaos, identity.folder, state.name):
        log.warning("%s", line)
    async with open_system() as system:
        joined = partial(JoinedHost, identity, state, place, partial(system.registered, AGENT))
        system.register("host", await system.spawn(joined, name="host"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_renewed, identity, state, place)
            failures = 0
            peer: Peer | None = None
            while peer is None:
                for address in place.addresses():
                    tls = ClientTLS(identity.cert, identity.cert, identity.ca, address[0])
                    try:
                        peer = await system.connect(
                            address, tls=tls, name=state.name, options=options, addresses=place.addresses
                        )
                        place.current = address
                        break
                    except (OSError, ValueError) as exc:  # LinkRefused is an OSError
                        log.warning("cannot link to the controller at %s:%d (%s)", *address, exc)
                else:
                    failures += 1
                    wait = min(options.reconnect_max, options.reconnect_min * 2 ** min(failures, 20))
                    await anyio.sleep(random.uniform(wait / 2, wait))
            log.info("host %r linked to the controller at %s:%d", state.name, *place.current)
            await start_agent(system, peer, identity, state, firewall)
            if ready is not None:
                ready.set()
            await peer.closed.wait()
            tg.cancel_scope.cancel()


def sweep_chaos(folder: Path, name: str) -> list[str]:
    """Undo the chaos an agent of this host left when it did not stop cleanly (SIGKILL mid-fault):
    its network faults (nft tables, qdiscs) and the VM processes it held stopped (blocking)."""
    return net_faults.sweep(net_faults.ledger_path(folder, name)) + hangs.sweep(
        hangs.ledger_path(folder, name)
    )


def controller_addresses(state: JoinState) -> list[tuple[str, int]]:
    """The controller's host ports this host may link to: every replica's, as the leader last
    sent them (the one it joined at, before that)."""
    found = []
    for address in state.controllers[:MAX_CONTROLLERS]:
        try:
            found.append(split_address(address))
        except ValueError:
            continue
    return found or [(state.controller, state.host_port)]


async def controller_settings(peer: Peer) -> Settings:
    """The settings the controller runs with (asked until it answers: it may be starting)."""
    wait = 0.1
    while True:
        try:
            answer: Settings = await peer.ref(REPORTS).ask(GetHostSettings(), timeout=10.0)
            return answer
        except (ActorDead, AskTimeout) as exc:
            log.info("the controller does not give its settings yet (%s); asking again", exc)
        await anyio.sleep(wait)
        wait = min(2.0, wait * 2)


async def start_agent(
    system: ActorSystem, peer: Peer, identity: Identity, state: JoinState, firewall: str = ""
) -> None:
    """Run this host's agent (registered as ``agent``) with the controller's settings; its VMs
    run under the state folder, children of this process."""
    settings = await controller_settings(peer)
    config = HostConfig(
        host_id=state.name,
        cores=state.cores,
        state_dir=str(identity.folder),
        settings=settings,
        fault_domain=state.fault_domain,
        firewall=firewall,
    )
    address = state.address or advertised_address(state.controller)
    agent = await system.spawn(
        lambda: RemoteHostAgent(
            config,
            reports=peer.ref(REPORTS),
            address=address,
            memory_mb=memory_mb(),
            hang_backstop=[sys.executable, "-m", "fabric.cluster.hang_end", str(identity.folder)],
        ),
        name=AGENT,
        stop_timeout=settings.on_stop_timeout + 3 * settings.process_stop_timeout,
    )
    system.register(AGENT, agent)
    log.info("host %r runs its agent; its instances listen on %s", state.name, address)
