"""The FabricController actor (seed B): the master of one machine pool.

It keeps the goal state of every deployment in SQLite, places instances on hosts (spinning
hosts up as needed), drives host agents toward the goal, aggregates instance status, keeps
the load balancers in step, and moves the instances of a dead host elsewhere.

Spawn it in the fabric's process::

    ref = await system.spawn(lambda: FabricController(state_dir, settings), name="fabric-controller")

and ask it the commands of fabric.controller.messages (see fabric.controller.client for
asking with ControllerError unwrapped). Hosts are host agent processes, children of the
controller; pass ``host_factory`` to use something else (tests use in-process stand-ins).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from actors import Actor
from fabric.controller import host_reach, lifecycle
from fabric.controller.chaos.messages import ChaosCommand
from fabric.controller.chaos.plugin import answer_chaos
from fabric.controller.commands import Commands
from fabric.controller.configuration_view import GetConfiguration, configuration_view
from fabric.controller.events import OpenEventLog
from fabric.controller.goal_store import open_goal_store
from fabric.controller.host_admin import CordonHost, DrainHost, HostAdmin, ListHosts, RemoveHost
from fabric.controller.hosts import HostFactory, HostLauncher, HostPool, JoinedReport, spawn_host_process
from fabric.controller.instance_exec import ExecInInstance, answer_exec_later
from fabric.controller.instance_logs import ReadInstanceLog, answer_later
from fabric.controller.instance_shell import ShellInInstance, answer_shell_later
from fabric.controller.joined import on_report, prune_forever
from fabric.controller.messages import (
    ChangeConfiguration,
    ControllerError,
    CreateDeployment,
    DeleteDeployment,
    DeploymentView,
    GetDeployment,
    GetDeploymentPage,
    GetOperation,
    InstanceAction,
    ListDeployments,
    SetDeploymentStatus,
    SummarizeDeployments,
    SwapDeployments,
    UpgradeDeployment,
    WalkUpgradeDomain,
)
from fabric.controller.metrics import MetricsQuery, metrics_snapshot
from fabric.controller.model import Deployment
from fabric.controller.operations import Operations
from fabric.controller.reconfigure import Reconfigure
from fabric.controller.recovery import recover
from fabric.controller.replica_store import fail_fast
from fabric.controller.rotation import Rotation
from fabric.controller.state import ControllerState
from fabric.controller.status_page import deployment_page
from fabric.controller.upgrade import Upgrades
from fabric.host.messages import HostHeartbeat, InstanceStatusChanged, InstanceStatusesChanged
from fabric.host.remote import JoinedLinkLost
from fabric.settings import Settings

log = logging.getLogger("fabric.controller")

DATABASE = "fabric.db"
#: what hosts tell the controller on their own (stamped as heard when they arrive)
_REPORTS = (HostHeartbeat, InstanceStatusChanged, InstanceStatusesChanged)


class FabricController(Actor):
    """The fabric controller of one machine pool.

    Args:
        state_dir: the fabric's state folder (``fabric.db``, ``deployments/``, ``hosts/``,
            ``vms/``); created when missing.
        settings: durations and limits (max_hosts, host_cores, host_failure_timeout...).
        pool: the machine pool's name (host ids are ``<pool>-host<n>``).
        host_factory: builds a host; by default a host agent process.
        store_url: a ``postgresql://`` URL to keep the goal state in (None: SQLite, ``fabric.db``).
        fence: a replica's lease (``Elector.fence``): every write checks it, and the store waits
            out a database outage (fabric.controller.replica_store); None: a single controller.
        on_fenced: called with the reason when a write finds the lease lost.
        host_launcher: starts local hosts detached, as joined hosts (a replica's; see HostPool).
    """

    def __init__(
        self,
        state_dir: str | Path,
        settings: Settings | None = None,
        pool: str = "local",
        host_factory: HostFactory | None = None,
        store_url: str | None = None,
        fence: Callable[[], Any] | None = None,
        on_fenced: Callable[[str], None] | None = None,
        host_launcher: HostLauncher | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.fence = fence
        self.on_fenced = on_fenced
        self.settings = settings or Settings()
        self.pool = pool
        self.host_factory = host_factory or spawn_host_process
        self.host_launcher = host_launcher
        self.store_url = store_url
        self._busy_since: float | None = None

    async def on_start(self) -> None:
        """Open the store, bring back what it holds, and start watching hosts."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        store = await open_goal_store(
            self.store_url,
            self.state_dir,
            self.pool,
            database=DATABASE,
            fence=self.fence,
            on_fenced=self.on_fenced,
        )
        rotation = Rotation(self.start)
        hosts = HostPool(
            self,
            self.host_factory,
            self.settings,
            self.state_dir,
            self._on_host_dead,
            closing=self._closing,
            busy_since=lambda: self._busy_since,
            backlogged=self.mailbox_full,
            launcher=self.host_launcher,
        )
        self.state = ControllerState(
            state_dir=self.state_dir,
            settings=self.settings,
            pool=self.pool,
            store=store,
            hosts=hosts,
            rotation=rotation,
        )
        await hosts.open_firewall()  # before any host starts
        self.ops = Operations(store, self.pool, self.state.notify)
        self.commands = Commands(self.state, self.ops, self.start_soon)
        self.upgrades = Upgrades(self.commands)
        self.reconfigure = Reconfigure(self.commands, self.upgrades)
        self.host_admin = HostAdmin(self.state, self.ops, self.start_soon)
        count = await recover(self.state, self.ops, self.upgrades, self.start_soon)
        if count:
            log.info("pool %s: recovered %d deployment(s) from %s", self.pool, count, store.where)
        self.on_arrival(self._arrived)
        self.start_soon(hosts.watch)
        self.start_soon(host_reach.watch, self.state)  # joined hosts NotReady: out of rotation
        self.start_soon(prune_forever, self.state)  # packed packages no deployment uses
        self.start_soon(lifecycle.heal_forever, self.state, self.start_soon)
        self.start_soon(self.state.flush_forever)

    def start_soon(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None
    ) -> None:
        """A background task: patient with the store (it waits out a database outage)."""
        with fail_fast(False):
            super().start_soon(func, *args, name=name)

    async def start(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None
    ) -> Any:
        """As start_soon, waiting for the task to start."""
        with fail_fast(False):
            return await super().start(func, *args, name=name)

    def _arrived(self, message: Any) -> None:
        """Stamp a host's report as it enters the mailbox: heard on time, however long the
        backlog ahead of it (the host watch must not blame hosts for the controller's queue)."""
        if isinstance(message, _REPORTS):
            self.state.hosts.heard(message.host_id)
        elif isinstance(message, JoinedReport):  # a joined host's heartbeat (fabric-hosts)
            self.state.hosts.heard(message.heartbeat.host_id)

    def _closing(self) -> bool:
        # Once the controller is asked to stop, hosts stop on purpose (and may be slow about
        # it): that is not a failure to heal.
        return self.stop_requested

    async def _on_host_dead(self, dead: list[Any]) -> None:
        await lifecycle.on_host_dead(self.state, dead)

    async def receive(self, message: Any) -> Any:
        """Host reports (tells) and fabric commands (asks), noting how long each holds the
        mailbox (heartbeats wait there meanwhile: the host watch must not blame the hosts)."""
        if type(message) is HostHeartbeat:
            # The common case, at once: a heartbeat that says nothing new (stamped on arrival).
            state = self.state
            if not state.hosts.heard(message.host_id, message.pid, stamp=False):
                return None  # an unknown host, or one declared dead
            if state.heartbeat_quiet(message.host_id, message.instances):
                return None
        self._busy_since = self.state.hosts.now()  # (anyio's clock looks its backend up each time)
        try:
            with fail_fast():  # a request is refused (503) while the goal state cannot change
                return await self._dispatch(message)
        except ControllerError as exc:
            if exc.status != 503 or not isinstance(message, _REPORTS):
                raise
            log.warning("a host's report is not recorded: %s", exc.message)  # the next one is
            return None
        finally:
            self._busy_since = None

    async def _dispatch(self, message: Any) -> Any:
        state = self.state
        match message:
            case InstanceStatusChanged(host_id=host_id, instance_id=vm, status=status, uid=uid):
                await state.on_status(host_id, vm, status, uid)  # heard as it arrived (_arrived)
            case InstanceStatusesChanged(host_id=host_id, changes=changes):  # a boot's steps, together
                for change in changes:
                    await state.on_status(host_id, change.instance_id, change.status, change.uid)
            case HostHeartbeat(host_id=host_id, instances=instances, pid=pid):
                if state.hosts.heard(host_id, pid, stamp=False):
                    for vm, status in instances.items():
                        await state.on_status(host_id, vm, status)
            case JoinedReport():  # a joined host's heartbeat, relayed by fabric-hosts
                await on_report(state, message, self.start_soon)
            case JoinedLinkLost(host_id=host_id):  # its instances leave rotation at once
                host_reach.link_lost(state, host_id)
            case ReadInstanceLog():  # fabric logs of an instance on a joined host
                answer_later(self, state, message)
            case ExecInInstance():  # fabric exec in an instance on a joined host
                answer_exec_later(self, state, message)
            case ShellInInstance():  # fabric shell in an instance on a joined host
                answer_shell_later(self, state, message)
            case GetDeployment(service=service, slot=slot):
                return self.view(state.get(service, slot))
            case GetDeploymentPage(service=service, slot=slot, limit=limit, after=after):
                return deployment_page(state.get(service, slot), state.rotation, limit, after)
            case ListDeployments(service=service):
                return [self.view(d) for d in self._listed(service)]
            case SummarizeDeployments(service=service):  # no instance's view built
                return [d.summary() for d in self._listed(service)]
            case GetOperation(request_id=request_id):
                return await self.ops.view(request_id)
            case CreateDeployment():
                return await self.commands.create(message)
            case ChangeConfiguration():
                return await self.reconfigure.change_configuration(message)
            case UpgradeDeployment():
                return await self.upgrades.upgrade(message)
            case WalkUpgradeDomain():
                return await self.upgrades.walk(message)
            case SetDeploymentStatus():
                return await self.commands.set_status(message)
            case InstanceAction():
                return await self.commands.instance_action(message)
            case DeleteDeployment():
                return await self.commands.delete(message)
            case SwapDeployments():
                return await self.commands.swap(message)
            case ChaosCommand():  # fault injection: answered by the chaos agent (fabric.controller.chaos)
                await answer_chaos(self, message)
            case OpenEventLog():  # in-process: readers wait on the log itself, not on this mailbox
                return state.events
            case MetricsQuery():
                return metrics_snapshot(state)
            case GetConfiguration():  # the portal's configuration form
                return configuration_view(state, message)
            case ListHosts() | CordonHost() | DrainHost() | RemoveHost():  # fabric hosts, fabric host ...
                return await self.host_admin.handle(message)
            case _:
                return await super().receive(message)
        return None

    def _listed(self, service: str | None) -> list[Deployment]:
        """Every deployment (``service``'s only, when given: RDFE's names are lower case), by
        service and slot."""
        wanted = None if service is None else service.lower()
        found = (d for d in self.state.deployments.values() if wanted in (None, d.service.lower()))
        return sorted(found, key=lambda d: (d.service, d.slot))

    def view(self, dep: Deployment) -> DeploymentView:
        """A deployment's DeploymentView, public endpoints included."""
        rotation = self.state.rotation
        return rotation.with_passive_state(dep, dep.view(rotation.endpoints(dep)))

    async def on_stop(self) -> None:
        """Hosts were stopped first (they are children); store what is pending, close the database."""
        await self.state.hosts.close_firewall()
        await self.state.flush()
        await self.state.store.aclose()
