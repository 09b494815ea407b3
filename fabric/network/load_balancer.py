"""The load balancer of one InputEndpoint: a public port spreading traffic over instances."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from functools import partial

import anyio
import msgspec
from anyio.abc import SocketAttribute, TaskStatus, UDPSocket

from . import _sock
from ._bind import PORT_ATTEMPTS, bind_tcp, bind_udp
from ._errors import InvalidSpecError, ToxicsUnsupportedError
from ._kernel import KernelPath, sweep_once, synced_all, usable
from ._model import Backend, EndpointSpec, LoadBalancerStats
from ._pool import Entry, Pool
from ._probe import probe_loop
from ._tcp import QUEUE_TIMEOUT, TcpBalancer
from ._udp import UdpBalancer
from .toxics import Toxic

#: closing an unserved UDP socket on the way out: immediate; the bound keeps a stop from hanging
SOCKET_CLOSE_TIMEOUT = 1.0

#: share_ports(): this process's TCP balancers bind with SO_REUSEPORT and listen once in rotation
_sharing = False
#: the TCP balancers of this process opened while sharing, by address (a port is one endpoint's)
_shared: dict[tuple[str, int], LoadBalancer] = {}


def share_ports(on: bool = True) -> None:
    """From now on this process's TCP balancers share their port (SO_REUSEPORT) with the
    balancers other processes of this user open on it with ``reuse_port`` (a controller
    replica's standby balancers, fabric.replica.balancer), and each starts listening only once
    an instance is in its rotation (until then the kernel gives its port's connections to the
    others). Two endpoints of this process never share a port."""
    global _sharing
    _sharing = on


def shared_listening(host: str, port: int) -> bool:
    """Whether a balancer of this process opened while sharing listens on (host, port)."""
    lb = _shared.get((host, port))
    return lb is not None and lb.listening


class LoadBalancer:
    """A running endpoint balancer; get one from ``open_load_balancer``.

    Attributes:
        spec: the endpoint it serves.
        address: the (host, port) it listens on; the port is the endpoint's public
            port unless that was taken, in which case it is the next free one.
    """

    def __init__(
        self,
        spec: EndpointSpec,
        address: tuple[str, int],
        engine: TcpBalancer | UdpBalancer,
        tg: anyio.abc.TaskGroup,
        closed: anyio.Event,
        kernel: KernelPath | None = None,
    ) -> None:
        self.spec = spec
        self.address = address
        self._engine = engine
        self._pool = engine.pool
        self._tg = tg
        self._closed = closed
        self._probes: dict[Entry, anyio.CancelScope] = {}
        self._kernel = kernel

    def set_backends(self, backends: Iterable[Backend]) -> None:
        """Replace the pool at once; connections to removed instances drain.

        Open connections to an instance left out (or given with a new address) go on
        until they end; new connections go only to the instances given here. An
        instance given again as Ready with a changed status is no longer refusing.
        """
        added, removed = self._pool.set_backends(backends)
        for entry in removed:
            scope = self._probes.pop(entry, None)
            if scope is not None:
                scope.cancel()
        if self.spec.probe is not None:
            for entry in added:
                self._probes[entry] = scope = anyio.CancelScope()
                self._tg.start_soon(self._probe, entry, scope)

    def set_spec(self, spec: EndpointSpec) -> None:
        """Serve ``spec``'s protocol and probe from now on, on the same address (a VIP swap
        brings the other deployment's), every open connection going on as it was.

        Raises:
            InvalidSpecError: ``spec`` is UDP where this is TCP, or the other way round.
        """
        if (spec.protocol == "udp") != isinstance(self._engine, UdpBalancer):
            raise InvalidSpecError(f"endpoint {self.spec.name!r}: cannot change between TCP and UDP in place")
        self.spec = spec
        for scope in self._probes.values():
            scope.cancel()
        self._probes.clear()
        self._pool.set_probed(spec.probe is not None)
        if spec.probe is not None:
            for entry in self._pool.entries():
                self._probes[entry] = scope = anyio.CancelScope()
                self._tg.start_soon(self._probe, entry, scope)

    def update(self, instance_id: str, *, ready: bool | None = None, busy: bool | None = None) -> None:
        """Change one instance's status; the next connection sees it (on the kernel data
        path, once the kernel's rules follow, a few ms later: ``await synced()``).

        Open connections are never cut. Saying ``ready=True`` also forgives refused
        connects, putting the instance back in rotation at once if it is not Busy.

        Raises:
            UnknownBackendError: the instance is not in the pool.
        """
        self._pool.update(instance_id, ready=ready, busy=busy)

    @property
    def listening(self) -> bool:
        """Whether it takes new TCP connections (UDP: always)."""
        return not isinstance(self._engine, TcpBalancer) or self._engine.listening

    def stop_listening(self) -> None:
        """Take no new TCP connection (on a shared port the kernel gives them to the other
        listeners); the open ones go on until they end or ``aclose``."""
        if isinstance(self._engine, TcpBalancer):
            self._engine.stop_accepting()

    def backends(self) -> list[Backend]:
        """The instances in the pool, in instance id order, with their last status."""
        return [e.backend for e in self._pool.entries()]

    def rotation(self) -> list[str]:
        """The ids of the instances that new connections go to now (refusing ones left out)."""
        return [e.backend.instance_id for e in self._pool.rotation]

    def refusing(self) -> list[str]:
        """The ids of the instances whose last connect was refused (retried after a delay)."""
        return [e.backend.instance_id for e in self._pool.entries() if e.failures]

    async def wait_drained(self, instance_ids: Collection[str]) -> None:
        """Wait until no TCP connection to ``instance_ids`` is open: give them no new ones
        first (``set_backends``). UDP has no connection to finish: it returns at once (a
        client's next datagram goes to an instance in rotation)."""
        if isinstance(self._engine, TcpBalancer):
            await self._pool.wait_drained(instance_ids)
            if self._kernel is not None:
                await self._kernel.wait_drained(instance_ids)

    def cut(self, instance_ids: Collection[str]) -> int:
        """Reset every open TCP connection to ``instance_ids`` (what outlived a drain);
        returns how many."""
        if not isinstance(self._engine, TcpBalancer):
            return 0
        cut = self._engine.cut(instance_ids)
        return cut + (self._kernel.cut(instance_ids) if self._kernel is not None else 0)

    async def wait_cut(self) -> None:
        """Wait until the kernel data path's connections that ``cut`` named are reset (the
        user-space ones are at once)."""
        if self._kernel is not None:
            await self._kernel.wait_cut()

    def kernel(self) -> list[str] | None:
        """The ids of the instances the kernel data path (nftables DNAT) spreads new
        connections over now; empty while the user-space path takes them all; None when
        this balancer has no kernel path (not root, no nft, UDP, or kernel=False)."""
        if self._kernel is None:
            return None
        return [instance_id for _, instance_id in self._kernel.routed]

    async def synced(self) -> None:
        """Wait until the kernel data path reflects every change made before the call."""
        if self._kernel is not None:
            await self._kernel.synced()

    def stats(self) -> LoadBalancerStats:
        """Counters per instance (pool, then draining ones) and totals since opening.

        On the kernel data path ``active`` and ``connections`` include the kernel's
        connections as last counted (at most ``COUNT_AGE`` old: a call finding the count
        older starts a new one; ``await count()`` waits for one), and ``refused`` a
        refused kernel connect once it marked its instance refusing; their bytes are not
        counted.
        """
        counters = self._engine.counters
        up, down = self._pool.traffic()
        backends = self._pool.stats()
        made = refused = 0
        if self._kernel is not None:
            kernel = self._kernel
            kernel.count_soon()
            made, refused = kernel.made_total, kernel.refused
            backends = tuple(
                msgspec.structs.replace(
                    b,
                    active=b.active + kernel.active.get(b.instance_id, 0),
                    connections=b.connections + kernel.made.get(b.instance_id, 0),
                )
                for b in backends
            )
            backends += tuple(kernel.draining({b.instance_id for b in backends}))
        return LoadBalancerStats(
            endpoint=self.spec.name,
            host=self.address[0],
            port=self.address[1],
            backends=backends,
            active=sum(b.active for b in backends),
            connections=counters.connections + made,
            refused=counters.refused + refused,
            rejected=counters.rejected,
            bytes_up=up,
            bytes_down=down,
        )

    async def count(self) -> None:
        """Count the kernel data path's connections now, for the next ``stats()``."""
        if self._kernel is not None:
            await self._kernel.count()

    def add_toxic(self, toxic: Toxic, hosts: Collection[str] = ()) -> str:
        """Inject ``toxic`` into open and new connections (only those to instances at the
        addresses ``hosts``, when given: a network fault on one machine); returns its id.

        While a toxic is in force new connections take the user-space path, once the kernel's
        rules follow (a few ms: ``await synced()``); connections the kernel data path opened
        before go on untouched.

        Raises:
            ToxicsUnsupportedError: a UDP endpoint, or one opened with toxics=False.
        """
        toxic_id = self._tcp("add_toxic").add_toxic(toxic, hosts)
        self._toxics_changed()
        return toxic_id

    def remove_toxic(self, toxic_id: str) -> None:
        """Remove one toxic; raises UnknownToxicError for an id not active here."""
        self._tcp("remove_toxic").remove_toxic(toxic_id)
        self._toxics_changed()

    def clear_toxics(self) -> None:
        """Remove every toxic."""
        if isinstance(self._engine, TcpBalancer):
            self._engine.clear_toxics()
            self._toxics_changed()

    def toxics(self) -> dict[str, Toxic]:
        """The active toxics by id."""
        return dict(self._engine.toxics) if isinstance(self._engine, TcpBalancer) else {}

    async def aclose(self) -> None:
        """Stop listening, end every connection, and wait until all are closed."""
        self._tg.cancel_scope.cancel()
        await self._closed.wait()

    def _toxics_changed(self) -> None:
        # A toxic in force sends new connections through the user-space path.
        if self._kernel is not None:
            self._kernel.poke()

    def _tcp(self, what: str) -> TcpBalancer:
        if not isinstance(self._engine, TcpBalancer):
            raise ToxicsUnsupportedError(
                f"endpoint {self.spec.name!r} is UDP: {what} works on TCP endpoints only"
            )
        return self._engine

    async def _probe(self, entry: Entry, scope: anyio.CancelScope) -> None:
        assert self.spec.probe is not None
        with scope:
            await probe_loop(self._pool, entry, self.spec.probe)


@asynccontextmanager
async def open_load_balancer(
    spec: EndpointSpec,
    backends: Iterable[Backend] = (),
    *,
    host: str = "127.0.0.1",
    toxics: bool = True,
    kernel: bool | None = None,
    connect_timeout: float = 5.0,
    queue_timeout: float = QUEUE_TIMEOUT,
    udp_idle_timeout: float = 240.0,
    port_attempts: int = PORT_ATTEMPTS,
    reuse_port: bool = False,
) -> AsyncIterator[LoadBalancer]:
    """Listen for ``spec`` on ``host`` and balance over ``backends`` until exit.

    Args:
        spec: the endpoint; its public port, or the next free one, is bound.
        backends: the initial pool (see ``LoadBalancer.set_backends``).
        host: the deployment's public address.
        toxics: False builds the plain pump, which cannot take toxics at all.
        kernel: True puts TCP on the kernel data path (nftables DNAT) when it can be
            (root, nft installed, an IPv4 loopback address); None (the default) does so
            unless the environment says REDDOG_LB_KERNEL=off; False never. See ``_kernel``.
        connect_timeout: seconds a connect to an instance may take before the next
            instance is tried.
        queue_timeout: seconds a TCP client waits for an instance to enter rotation when
            none is in it, before it is reset.
        udp_idle_timeout: seconds after which a quiet UDP client may change instance.
        port_attempts: how many ports from the public one are tried.
        reuse_port: TCP only: share the port with other sockets of this user that set
            SO_REUSEPORT (the kernel spreads new connections over those listening).

    Raises:
        NoFreePortError: no port in the range tried could be bound.
    """
    bound = await _bind(spec, host, port_attempts, reuse_port)
    run = partial(
        _run,
        spec,
        bound,
        backends,
        toxics=toxics,
        kernel=kernel,
        connect_timeout=connect_timeout,
        queue_timeout=queue_timeout,
        udp_idle_timeout=udp_idle_timeout,
    )
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        lb: LoadBalancer = await tg.start(run)
        try:
            yield lb
        except Exception as exc:
            # Re-raised below, outside the task group, so callers see it unwrapped.
            error = exc
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error


async def serve_load_balancer(
    spec: EndpointSpec,
    backends: Iterable[Backend] = (),
    *,
    host: str = "127.0.0.1",
    toxics: bool = True,
    kernel: bool | None = None,
    connect_timeout: float = 5.0,
    queue_timeout: float = QUEUE_TIMEOUT,
    udp_idle_timeout: float = 240.0,
    port_attempts: int = PORT_ATTEMPTS,
    keep_refused: bool = False,
    reuse_port: bool = False,
    task_status: TaskStatus[LoadBalancer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a load balancer until cancelled or closed; ``task_status.started`` gets it.

    For a caller keeping balancers in its own task group:
    ``lb = await tg.start(serve_load_balancer, spec)``. Arguments are those of
    ``open_load_balancer``; ``keep_refused`` keeps an instance in rotation after a
    refused connect (for single-instance forwarding).
    """
    bound = await _bind(spec, host, port_attempts, reuse_port)
    await _run(
        spec,
        bound,
        backends,
        toxics=toxics,
        kernel=kernel,
        connect_timeout=connect_timeout,
        queue_timeout=queue_timeout,
        udp_idle_timeout=udp_idle_timeout,
        keep_refused=keep_refused,
        task_status=task_status,
    )


async def _bind(
    spec: EndpointSpec, host: str, attempts: int, reuse_port: bool = False
) -> socket.socket | UDPSocket:
    # Bound before any task group exists, so a NoFreePortError reaches the caller bare.
    if spec.protocol == "udp":
        return await bind_udp(spec.name, host, spec.public_port, attempts=attempts)
    if _sharing and not reuse_port:  # listens once in rotation (TcpBalancer.serve's defer)
        taken = {port for (h, port) in _shared if h == host}
        return await bind_tcp(
            spec.name, host, spec.public_port, attempts=attempts, reuse_port=True, now=False, taken=taken
        )
    return await bind_tcp(spec.name, host, spec.public_port, attempts=attempts, reuse_port=reuse_port)


async def _run(
    spec: EndpointSpec,
    bound: socket.socket | UDPSocket,
    backends: Iterable[Backend],
    *,
    toxics: bool,
    kernel: bool | None,
    connect_timeout: float,
    queue_timeout: float,
    udp_idle_timeout: float,
    keep_refused: bool = False,
    task_status: TaskStatus[LoadBalancer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    pool = Pool(
        ignore_status=spec.ignore_role_instance_status,
        probed=spec.probe is not None,
        keep_refused=keep_refused,
    )
    closed = anyio.Event()
    engine: TcpBalancer | UdpBalancer
    lb: LoadBalancer | None = None
    try:
        async with anyio.create_task_group() as tg:
            if isinstance(bound, socket.socket):
                address = bound.getsockname()
                engine = TcpBalancer(
                    spec.name,
                    pool,
                    toxics=toxics,
                    connect_timeout=connect_timeout,
                    queue_timeout=queue_timeout,
                )
            else:
                address = bound.extra(SocketAttribute.local_address)
                engine = UdpBalancer(spec.name, pool, idle_timeout=udp_idle_timeout)
            # bound but not listening: opened while sharing (see _bind)
            shared = isinstance(bound, socket.socket) and not bound.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN
            )
            if isinstance(engine, TcpBalancer):
                await tg.start(partial(engine.serve, defer=shared), bound)
            else:
                await tg.start(engine.serve, bound)
            host, port = str(address[0]), int(address[1])
            path = None
            if isinstance(engine, TcpBalancer) and usable(host, kernel):
                path = KernelPath(host, port, pool, partial(bool, engine.toxics))
                pool.changed = path.poke
                engine.accepted = path.accepted
                if not await tg.start(path.run):
                    pool.changed = engine.accepted = None
                    path = None
            elif isinstance(engine, TcpBalancer):
                await sweep_once()
            lb = LoadBalancer(spec, (host, port), engine, tg, closed, path)
            if shared:
                _shared[(host, port)] = lb
            lb.set_backends(backends)
            await lb.synced()  # the first connection already takes the path it will keep
            task_status.started(lb)
    finally:
        if lb is not None and _shared.get(lb.address) is lb:
            del _shared[lb.address]
        # The engine closes its socket; this covers a cancel before it took it over.
        if isinstance(bound, socket.socket):
            _sock.close(bound)
        else:
            with anyio.move_on_after(SOCKET_CLOSE_TIMEOUT, shield=True):
                await bound.aclose()
        closed.set()


async def synced() -> None:
    """Wait until the kernel data path of every load balancer in this process reflects every
    change made before the call (their rotations, toxics)."""
    await synced_all()
