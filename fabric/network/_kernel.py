"""The kernel data path: nftables DNAT spreads an endpoint's new connections, as kube-proxy does.

While it is in force the balancer's own listener sees no connection: the kernel rewrites each
new one (round robin over the rotation) and conntrack carries its bytes. The user-space path
takes over whenever the kernel cannot do what the balancer promises: no instance in rotation
(clients queue), a toxic set, an instance refusing connects (trials and retries), a backend
off loopback; and for ``TRIP_SECONDS`` after the kernel saw a backend refuse a connect.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import weakref
from collections import Counter
from collections.abc import Callable, Collection

import anyio
from anyio.abc import TaskStatus

from . import _flows, _nft
from ._flows import Addr
from ._model import BackendStats
from ._pool import Pool

log = logging.getLogger("fabric.network")

#: "off" keeps the balancers of this process that were not told otherwise off the kernel path
ENV = "REDDOG_LB_KERNEL"
OFF = ("off", "0", "no", "false")
#: seconds a count of the kernel path's connections is shown before stats() counts again
COUNT_AGE = 1.0
#: seconds between two counts of the kernel path's connections while waiting for a drain
DRAIN_POLL = 0.1
#: backend addresses remembered for drains (older ones, routed no more, are forgotten)
MAX_REMEMBERED = 4096


def usable(vip: str, wanted: bool | None) -> bool:
    """Whether a balancer on ``vip`` takes the kernel path: ``wanted`` (None: unless
    REDDOG_LB_KERNEL is "off"), as root, nft installed, on an IPv4 loopback address; when
    it cannot be, one log line per reason and process says why."""
    if wanted is None:
        wanted = os.environ.get(ENV, "").lower() not in OFF
    if not wanted:
        return False
    if os.geteuid() != 0:
        _explain("not running as root")
    elif _nft.nft_path() is None:
        _explain("nft is not installed (Debian package nftables)")
    elif not _loopback(vip):
        _explain(f"{vip} is not an IPv4 loopback address (nftables DNAT in the output hook)")
    else:
        return True
    return False


_explained: set[str] = set()


def _explain(reason: str) -> None:
    if reason not in _explained:
        _explained.add(reason)
        log.info(
            "load balancer: user-space data path, no kernel data path: %s (%s=off says so quietly)",
            reason,
            ENV,
        )


_swept = False
#: the kernel paths running in this process
_live: weakref.WeakSet[KernelPath] = weakref.WeakSet()


async def synced_all() -> None:
    """Wait until every kernel path of this process reflects the changes made before the call."""
    for path in list(_live):
        await path.synced()


async def sweep_once() -> None:
    """Delete the tables of crashed balancers once per process, whether or not this one
    uses the kernel path: a stale DNAT rule would steal a restarted balancer's port."""
    global _swept
    if _swept or os.geteuid() != 0 or _nft.nft_path() is None:
        return
    _swept = True
    try:
        await _nft.sweep()
    except OSError as exc:
        log.warning("cannot sweep stale nft tables: %s", exc)


def _loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == 4 and ip.is_loopback


class KernelPath:
    """The nftables table of one TCP balancer, kept in step with its pool."""

    def __init__(self, vip: str, port: int, pool: Pool, toxic: Callable[[], bool]) -> None:
        self.vip = vip
        self.port = port
        self.table = _nft.table_name(port)
        self._pool = pool
        self._toxic = toxic
        #: (address, instance id) of the backends the kernel spreads new connections over
        self.routed: list[tuple[Addr, str]] = []
        self._ids: dict[Addr, str] = {}
        self._requested = 0
        self._applied = 0
        self._wake = anyio.Event()
        self._done = anyio.Event()
        self._running = False
        self._tg: anyio.abc.TaskGroup | None = None
        #: kernel connections to the instances of the last drain, at its last count
        self._left: dict[str, int] = {}
        #: the nft counter of each (backend address, instance id) ever routed
        self._names: dict[tuple[Addr, str], str] = {}
        self._next_name = 0
        #: at the last count: open kernel connections and kernel connections made, by
        #: instance id, and made in all (forgotten backends' too)
        self.active: dict[str, int] = {}
        self.made: dict[str, int] = {}
        self.made_total = 0
        self.counted_at = -math.inf
        self._counting = False
        self._looked: anyio.Event | None = None
        #: refused kernel connects that marked an instance refusing
        self.refused = 0
        self._cuts = 0
        self._cut_done = anyio.Event()

    def poke(self) -> None:
        """The pool or the toxics changed: bring the kernel's rules in step."""
        self._requested += 1
        self._wake.set()

    def desired(self) -> list[tuple[Addr, str]]:
        """What the kernel should spread over now; empty hands every connection to user space."""
        if self._toxic():
            return []
        out = []
        for entry in self._pool.candidates:
            backend = entry.backend
            if entry.failures or not _loopback(backend.host):
                return []
            out.append(((backend.host, backend.port), backend.instance_id))
        return out

    async def run(self, *, task_status: TaskStatus[bool] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep the table in step until cancelled, then delete it; started(False) when the
        kernel path cannot be set up (the user-space path serves alone)."""
        try:
            await _nft.sweep()  # tables a crashed balancer left behind
            await _nft.run(_nft.create(self.table, self.vip, self.port))
        except OSError as exc:
            log.warning("load balancer on port %d: no kernel data path (%s)", self.port, exc)
            task_status.started(False)
            return
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._running = True
                _live.add(self)
                task_status.started(True)
                await self._sync_forever()
        finally:
            self._running = False
            _live.discard(self)
            self._done.set()
            with anyio.CancelScope(shield=True), anyio.move_on_after(_nft.NFT_TIMEOUT):
                # A stopped balancer ends its connections, the kernel's as well as its own;
                # first, as once the table is gone no NAT hook rewrites their resets.
                with contextlib.suppress(OSError):
                    await _nft.run(_nft.route(self.table, self.vip, self.port, []))
                await _flows.reset(await _flows.open_flows(self.vip, self.port))
                try:
                    await _nft.delete(self.table)
                except OSError as exc:
                    log.warning("cannot delete nft table %s: %s", self.table, exc)

    async def _sync_forever(self) -> None:
        while True:
            target = self._requested
            want = self.desired()
            if want != self.routed:
                script = _nft.route(self.table, self.vip, self.port, [(self._name(k), k[0]) for k in want])
                try:
                    await _nft.run(script)
                except OSError as exc:
                    log.warning("load balancer on port %d: kernel rules not updated: %s", self.port, exc)
                else:
                    self.routed = want
                    self._remember(want)
            self._applied = target
            self._done.set()
            self._done = anyio.Event()
            if self._requested == target:
                await self._wake.wait()
                self._wake = anyio.Event()

    def _remember(self, routed: list[tuple[Addr, str]]) -> None:
        if len(self._ids) > MAX_REMEMBERED:
            self._ids = dict(self.routed)
            self._names = {k: self._names[k] for k in routed if k in self._names}
        for addr, instance_id in routed:
            self._ids[addr] = instance_id

    def _name(self, key: tuple[Addr, str]) -> str:
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = f"to_{self._next_name}"
            self._next_name += 1
        return name

    async def accepted(self) -> None:
        """The user-space listener got a connection: while the kernel routes, it came by a
        refused kernel connect (or just before a change); mark the refusing instances before
        it is given one (a lookup in flight serves every connection meanwhile)."""
        if not self.routed or not self._running:
            return
        if self._looked is not None:
            await self._looked.wait()
            return
        self._looked = anyio.Event()
        try:
            addrs = set(await _nft.refused(self.table))
        except (OSError, TimeoutError) as exc:
            log.warning("load balancer on port %d: cannot read refusals: %s", self.port, exc)
            addrs = set()
        finally:
            self._looked.set()
            self._looked = None
        for entry in self._pool.entries():
            backend = entry.backend
            if (backend.host, backend.port) in addrs and not entry.failures:
                self.refused += 1
                self._pool.refused(entry)

    def draining(self, known: Collection[str]) -> list[BackendStats]:
        """The instances not in ``known`` with kernel connections open at the last count."""
        addrs = {i: a for a, i in self._ids.items()}
        return [
            BackendStats(
                instance_id=i,
                host=addrs[i][0],
                port=addrs[i][1],
                in_rotation=False,
                draining=True,
                active=n,
                connections=self.made.get(i, 0),
                refused=0,
                bytes_up=0,
                bytes_down=0,
            )
            for i, n in sorted(self.active.items())
            if n and i not in known and i in addrs
        ]

    def count_soon(self) -> None:
        """Count the kernel path's connections again (in the background) if the last count
        is older than ``COUNT_AGE``."""
        if self._counting or not self._running or self._tg is None:
            return
        if anyio.current_time() - self.counted_at >= COUNT_AGE:
            self._counting = True
            self._tg.start_soon(self.count)

    async def count(self) -> None:
        """Count the kernel path's open connections (conntrack, read in a worker thread) and
        the connections it made (nft counters)."""
        self._counting = True
        try:
            flows = await _flows.open_flows(self.vip, self.port)
            try:
                packets = await _nft.counters(self.table)
            except (OSError, TimeoutError):
                packets = {}
        finally:
            self._counting = False
        self.active = dict(Counter(self._ids.get(b, "") for _, b in flows))
        made: dict[str, int] = {}
        for (_, instance_id), name in self._names.items():
            made[instance_id] = made.get(instance_id, 0) + packets.get(name, 0)
        self.made = made
        self.made_total = max(self.made_total, sum(packets.values()))
        self.counted_at = anyio.current_time()

    async def synced(self) -> None:
        """Wait until the kernel's rules reflect every change made before this call."""
        target = self._requested
        while self._running and self._applied < target:
            await self._done.wait()

    async def wait_drained(self, instance_ids: Collection[str]) -> None:
        """Wait until no kernel connection to ``instance_ids`` is open (conntrack's view)."""
        await self.synced()
        while True:
            left = await self._flows(instance_ids)
            self._left = {i: sum(1 for _, f in left if f == i) for i in instance_ids}
            if not left:
                return
            await anyio.sleep(DRAIN_POLL)

    def cut(self, instance_ids: Collection[str]) -> int:
        """Reset the kernel connections to ``instance_ids`` (soon); returns how many there
        were at the last count of a drain."""
        if self._tg is not None and self._running:
            self._cuts += 1
            self._tg.start_soon(self._cut, set(instance_ids))
        return sum(self._left.get(i, 0) for i in instance_ids)

    async def wait_cut(self) -> None:
        """Wait until every cut asked for before the call has reset its connections."""
        while self._cuts and self._running:
            await self._cut_done.wait()

    async def _cut(self, instance_ids: set[str]) -> None:
        try:
            flows = await _flows.open_flows(self.vip, self.port)
            doomed = [(c, b) for c, b in flows if self._ids.get(b) in instance_ids]
            if doomed:
                await _flows.reset(doomed)
        finally:
            self._cuts -= 1
            self._cut_done.set()
            self._cut_done = anyio.Event()

    async def _flows(self, instance_ids: Collection[str]) -> list[tuple[Addr, str]]:
        flows = await _flows.open_flows(self.vip, self.port)
        found = [(c, self._ids.get(b, "")) for c, b in flows]
        return [(c, i) for c, i in found if i in instance_ids]
