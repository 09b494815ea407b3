"""A replica's standby load balancers: the site answers while no leader does.

The leader's balancers run in its process and die with it. So every replica also serves each
load-balanced TCP endpoint and TCP instance input port (forwarded to its one instance) the
leader shows (``fabric_views``: the deployments' public endpoints
and their instances' addresses and states), on the same address with SO_REUSEPORT: the kernel
spreads new connections over every listener of the port, and a dead process's listener is gone
from the group at once. A standby balancer's rotation is the instances its view shows ReadyRole
(not refusing at the leader's balancer), so it is at most one views interval plus a write old;
its own passive health skips an instance that refuses. The leader's balancers (``share_ports``)
listen once an instance is in their rotation, so a new leader's, empty until its hosts report
again, leaves the port's connections to the standby ones meanwhile.

While its replica follows, a standby balancer follows the views; it closes (its open
connections go on to their end) when its endpoint is gone or has nobody in rotation (a
suspended deployment, or a new leader not yet told its instances' states: the other replicas
serve meanwhile). While its replica leads, it keeps the last rotation it knew (the new leader's
views read RoleStateUnknown until the hosts report) until the leader's own balancer on that
address listens (or the views show the endpoint no more), then closes the same way; a leader
opens none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import anyio
import anyio.abc

from fabric.controller.messages import DeploymentView
from fabric.controller.pg_store import Database, StoreUnavailable
from fabric.model.status import in_rotation
from fabric.network import (
    Backend,
    EndpointProtocol,
    EndpointSpec,
    LoadBalancer,
    NetworkError,
    serve_load_balancer,
    share_ports,
    shared_listening,
)
from fabric.replica.views import DEPLOYMENT, read_rows, view_of

log = logging.getLogger("fabric.replica")

#: seconds a closing standby balancer's open connections get to end before they are reset
RETIRE_TIMEOUT = 30.0
#: seconds between two looks at a closing balancer's open connections
RETIRE_POLL = 0.2

Address = tuple[str, int]
TCP: dict[str, EndpointProtocol] = {"tcp": "tcp", "http": "http", "https": "https"}


def rotations(views: list[DeploymentView]) -> dict[Address, tuple[EndpointSpec, list[Backend]]]:
    """Every load-balanced TCP endpoint the views show, with the instances in its rotation, and
    every instance input port (TCP) with its one instance while it is in rotation."""
    out: dict[Address, tuple[EndpointSpec, list[Backend]]] = {}
    for view in views:
        for ep in view.endpoints:
            protocol = TCP.get(ep.protocol)
            if protocol is None:  # UDP: no connection to keep serving
                continue
            members = [i for i in view.instances if i.role == ep.role and ep.name in i.endpoints]
            if not members:  # an instance input endpoint: "<endpoint>.<instance id>"
                name, _, instance = ep.name.rpartition(".")
                members = [
                    i
                    for i in view.instances
                    if i.role == ep.role and i.id == instance and name in i.endpoints
                ]
                if not members:
                    continue
            else:
                name = ep.name
            backends = []
            for inst in members:
                if not in_rotation(inst.status) or name in inst.refusing:
                    continue
                host, _, port = inst.endpoints[name].rpartition(":")
                backends.append(Backend(instance_id=inst.id, host=host, port=int(port)))
            spec = EndpointSpec(
                name=f"{view.service}/{ep.role}/{ep.name}", protocol=protocol, public_port=ep.port
            )
            out[(ep.host, ep.port)] = (spec, backends)
    return out


class Standby:
    """The standby balancers of one replica, by address."""

    def __init__(self, tg: anyio.abc.TaskGroup, say: Callable[[str], None]) -> None:
        self._tg = tg
        self._say = say
        self.open: dict[Address, LoadBalancer] = {}
        self._given: dict[Address, list[Backend]] = {}
        self._refused: set[Address] = set()

    async def step(
        self, wanted: dict[Address, tuple[EndpointSpec, list[Backend]]] | None, leading: bool
    ) -> None:
        """Serve what the views show (``wanted``; None: unread). A follower opens, updates and
        closes; a leader only closes: where its own balancer listens, and what the views no
        longer show (its rotation stays the last one it knew as a follower)."""
        for address in list(self.open):
            if shared_listening(*address):
                self._say(f"standby balancer on {address[0]}:{address[1]}: the leader's own listens; closing")
                self.retire(address)
            elif wanted is not None and (address not in wanted or (not leading and not wanted[address][1])):
                self.retire(address)
        if leading or wanted is None:
            return
        for address, (spec, backends) in wanted.items():
            if not backends:
                continue
            lb = self.open.get(address)
            if lb is None:
                await self._open(address, spec, backends)
            elif self._given[address] != backends:
                lb.set_backends(backends)
                self._given[address] = backends

    def retire(self, address: Address) -> None:
        """Stop taking connections on ``address``; close once the open ones end."""
        lb = self.open.pop(address)
        self._given.pop(address, None)
        lb.stop_listening()
        self._tg.start_soon(_retire, lb)

    async def _open(self, address: Address, spec: EndpointSpec, backends: list[Backend]) -> None:
        start = partial(
            serve_load_balancer,
            spec,
            backends,
            host=address[0],
            port_attempts=1,
            reuse_port=True,
            kernel=False,  # the leader's kernel path (if any) takes every connection it can
            toxics=False,
        )
        try:
            self.open[address] = await self._tg.start(start)
        except NetworkError as exc:  # held by a socket that does not share it
            if address not in self._refused:
                self._refused.add(address)
                log.warning("standby balancer on %s:%d not opened: %s", address[0], address[1], exc)
            return
        self._refused.discard(address)
        self._given[address] = backends
        self._say(f"standby balancer on {address[0]}:{address[1]}: {len(backends)} instance(s)")


async def _retire(lb: LoadBalancer) -> None:
    with anyio.move_on_after(RETIRE_TIMEOUT):
        while True:  # connections end in the balancer's own tasks: a count, looked at
            if not lb.stats().active:
                break
            await anyio.sleep(RETIRE_POLL)
    await lb.aclose()


async def serve_standby(
    db: Database,
    leading: Callable[[], bool],
    interval: float,
    say: Callable[[str], None] = lambda line: None,
    *,
    task_status: anyio.abc.TaskStatus[Standby] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run this replica's standby balancers until cancelled, reading the views every
    ``interval``; this process's own balancers share their ports from now on (share_ports).
    ``say`` gets a line when one opens or hands over to the leader's."""
    share_ports()
    async with anyio.create_task_group() as tg:
        standby = Standby(tg, say)
        task_status.started(standby)
        while True:
            wanted = None
            try:
                rows = await read_rows(db, [], DEPLOYMENT)
            except StoreUnavailable as exc:
                log.debug("standby balancers keep their rotation: %s", exc)
            else:
                wanted = rotations([view_of(r) for r in rows.values()])
            await standby.step(wanted, leading())
            await anyio.sleep(interval)
