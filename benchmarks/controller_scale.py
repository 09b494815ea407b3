"""Controller scale benchmark: the real FabricController and its store against N simulated hosts.

    .venv/bin/python benchmarks/controller_scale.py [--quick] [--sizes 100,1000,10000]

The controller runs in its own process (``BenchController``: FabricController with a host
factory). Its hosts are stand-ins living in one simulator process, a child of the controller's
process over a real process link: each speaks the host protocol of fabric.host.messages
(StartGuest, StopGuest, RestartGuest, ApplyGuestEnvironment, GetHostStatus asked; HostHeartbeat
every ``--heartbeat`` seconds, at a random phase per host, and its statuses told back as a host
agent tells them: fabric.host.reports), has 8 cores, and boots a guest through CreatingVM ...
ReadyRole at once. The controller's HostPool sees each host as a Ref whose asks travel the
simulator's link (``HostProxy``).

For each N (hosts) it measures:
- placement: one deployment of 2N Large instances (4 cores: two per 8-core host) from the
  CreateDeployment ask until the controller knows every instance ReadyRole (the simulator's
  last report, sent earlier, beside it), and the controller's CPU meanwhile per instance placed
  (the figure that holds on a loaded machine);
- steady CPU: the controller process's CPU (psutil cpu_times, user + system) over a window once
  everything is Ready, in % of one core and per heartbeat (the simulator's beside it);
- heal: one host goes silent; the time until its two instances are ReadyRole on another host,
  less the detection delay the settings ask for (host_failure_timeout);
- recovery: the controller process is SIGKILLed; the time until a fresh one on the same state
  folder answers ListDeployments with the deployment and all its instances;
- store: the size of fabric.db once its write-ahead log is checkpointed (at the end);
- raw baseline: once the controller is gone, a process without it (``RawPlacer``) makes the
  same N hosts and N StartGuests asks (2 instances each, as the controller asks a local host)
  to a simulator of its own, dropping the reports: the placement's time and CPU beside it.
Then the exponent k of each figure ~ N^k (least squares on log-log): 1 is linear (0 for a
figure per instance or per heartbeat).
Goal at N = 10,000: steady CPU < 50% of one core, placement < 10 s, recovery < 10 s.
The load average is printed beside the figures (the machine may be shared).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# benchmarks/actors.py is named after the package: keep this folder off the import path, and
# let the child processes import this module as benchmarks.controller_scale.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(_HERE.parent), os.environ.get("PYTHONPATH", "")) if p
)

import anyio  # noqa: E402
import anyio.lowlevel  # noqa: E402
import msgspec  # noqa: E402
import psutil  # noqa: E402

from actors import Actor, ActorDead, MailboxFull, ProcessOptions, Ref, Request, open_system  # noqa: E402
from benchmarks.support.bench_scale import (  # noqa: E402
    deploy_scale,
    kill_controller,
    wait_listed,
    write_scale_package,
)
from fabric.controller import ask  # noqa: E402
from fabric.controller.controller import FabricController  # noqa: E402
from fabric.guest.messages import EnvironmentApplied, GuestConfig, InstanceStatus  # noqa: E402
from fabric.host.messages import (  # noqa: E402
    ApplyGuestEnvironment,
    GetHostStatus,
    GuestLinkFault,
    HostConfig,
    HostHeartbeat,
    InstanceStatusChanged,
    InstanceStatusesChanged,
    RestartGuest,
    StartedGuests,
    StartGuest,
    StartGuests,
    StartOutcome,
    StatusChange,
    StopGuest,
)
from fabric.host.reports import HOLD_SECONDS, StatusReports  # noqa: E402
from fabric.model.package import build_package  # noqa: E402
from fabric.settings import Settings  # noqa: E402

HostRequest = (
    StartGuest
    | StartGuests
    | StopGuest
    | RestartGuest
    | ApplyGuestEnvironment
    | GetHostStatus
    | GuestLinkFault
)


# -- messages between the controller's process and the simulator -------------------------------


class ToHost(Request[Any], frozen=True, tag=True):
    """A host request for one stand-in host of the simulator."""

    host_id: str
    message: HostRequest


class AddHost(msgspec.Struct, frozen=True, tag=True):
    """Build a stand-in host (the controller spins a host up). Told, not asked: the host's
    requests follow it on the same link, in order, so they find it built (an ask's round trip
    per host was the benchmark's cost, not the controller's)."""

    config: HostConfig


class DropHost(msgspec.Struct, frozen=True, tag=True):
    """The controller stopped a host (or declared it dead): it runs nothing any more."""

    host_id: str


class KillHost(Request["Killed"], frozen=True, tag=True):
    """The benchmark: the host (None: the lowest-numbered one with guests) goes silent."""

    host_id: str | None = None


class Killed(msgspec.Struct, frozen=True):
    host_id: str
    vms: list[str]
    at: float
    #: wall time of the host's last heartbeat (the controller's failure timeout counts from it)
    last_beat: float


class SimStats(Request["Stats"], frozen=True, tag=True):
    """The simulator's counts; ``vms``: when each of them was last Ready on a live host."""

    vms: list[str] = []


class Stats(msgspec.Struct, frozen=True):
    pid: int
    hosts: int
    guests: int
    ready: int
    last_ready: float
    ready_at: dict[str, float]
    heartbeats: int


class Profile(Request[None], frozen=True, tag=True):
    """For --profile: the controller starts (``path`` empty) or stops cProfile, writing its
    stats to ``path``."""

    path: str = ""


class DeadHosts(Request[int], frozen=True, tag=True):
    """How many hosts the controller declared dead so far."""


class ReadyCount(Request[int], frozen=True, tag=True):
    """How many instances the controller has known to be ReadyRole since first asked (its
    reports all handled): placement's end."""


class Template(Request[GuestConfig], frozen=True, tag=True):
    """The GuestConfig of the deployment's first instance (for the raw baseline)."""


class RawPlace(Request[float], frozen=True, tag=True):
    """The raw baseline: a process without the controller's logic (``RawPlacer``) spawns a
    simulator with ``n`` hosts and asks it to start ``2n`` guests (one StartGuests ask a host,
    with the deployment's own GuestConfig as ``template``); answers the seconds until all
    report ReadyRole."""

    n: int
    template: GuestConfig


class SimAsk(Request[Any], frozen=True, tag=True):
    """For the benchmark: forwarded by the controller to its simulator."""

    message: KillHost | SimStats


# -- the simulator process ----------------------------------------------------------------------


class SimHost:
    """One stand-in host: guests and their statuses, heartbeating the controller."""

    __slots__ = ("alive", "config", "guests", "incarnation", "last_beat", "reports", "status")

    def __init__(self, config: HostConfig, reports: StatusReports) -> None:
        self.config = config
        self.reports = reports
        self.guests: dict[str, GuestConfig] = {}
        self.status: dict[str, InstanceStatus] = {}
        self.incarnation: dict[str, int] = {}
        self.alive = True
        self.last_beat = 0.0


class Simulator(Actor):
    """Every stand-in host of the pool, in one process (a child of the controller's)."""

    def __init__(self, seed: int = 1) -> None:
        self.hosts: dict[str, SimHost] = {}
        self.random = random.Random(seed)
        self.ready_at: dict[str, float] = {}  # vm -> wall time it was last reported Ready
        self.ready = 0
        self.last_ready = 0.0
        self.heartbeats = 0
        #: (due, tie, host, first): when each host beats next (one task beats them all)
        self._beats: list[tuple[float, int, SimHost, bool]] = []
        #: (due, tie, reports): when the boot steps each host holds are sent (the same task)
        self._flushes: list[tuple[float, int, StatusReports]] = []
        self._tie = itertools.count()
        #: (host, vm, incarnation, next step) of the guests booting: one task takes each a step
        #: further in turn (a task per boot was most of the simulator's CPU at 10,000 hosts)
        self._booting: list[tuple[SimHost, str, int, int]] = []
        self._boot_wake = anyio.Event()

    async def on_start(self) -> None:
        self.start_soon(self._beat_forever)
        self.start_soon(self._boot_forever)

    async def receive(self, message: Any) -> Any:
        match message:
            case ToHost(host_id=host_id, message=request):
                host = self.hosts.get(host_id)
                if host is None or not host.alive:
                    self.defer_reply()  # a dead host never answers (the ask times out)
                    return None
                return await self._host_request(host, request)
            case AddHost(config=config):
                old = self.hosts.get(config.host_id)
                if old is not None:
                    old.alive = False
                host = self.hosts[config.host_id] = SimHost(config, self._reports(config.host_id))
                heapq.heappush(self._beats, (anyio.current_time(), next(self._tie), host, True))
            case DropHost(host_id=host_id):
                host = self.hosts.pop(host_id, None)
                if host is not None:
                    host.alive = False
                    for vm in host.guests:
                        self._not_ready(vm)
            case KillHost(host_id=host_id):
                if host_id is None:
                    host_id = next(h for h, host in self.hosts.items() if host.alive and host.guests)
                host = self.hosts[host_id]
                host.alive = False
                for vm in host.guests:
                    self._not_ready(vm)
                return Killed(host_id, sorted(host.guests), time.time(), host.last_beat)
            case SimStats(vms=vms):
                return Stats(
                    pid=os.getpid(),
                    hosts=sum(1 for h in self.hosts.values() if h.alive),
                    guests=sum(len(h.guests) for h in self.hosts.values() if h.alive),
                    ready=self.ready,
                    last_ready=self.last_ready,
                    ready_at={vm: self.ready_at[vm] for vm in vms if vm in self.ready_at},
                    heartbeats=self.heartbeats,
                )
            case _:
                return await super().receive(message)
        return None

    def _reports(self, host_id: str) -> StatusReports:
        """A host's status reports, as a host agent sends them (fabric.host.reports): the steps
        of a boot held back a moment to go together; nothing once the host is dead."""

        async def send(message: Any) -> None:
            host = self.hosts.get(host_id)
            if host is not None and host.alive and host.reports is reports:
                assert self.parent is not None
                await self._tell_controller(message)

        reports = StatusReports(host_id, send, self._arm)
        return reports

    async def _tell_controller(self, message: Any) -> None:
        """Tell the controller a host's report: at once while the link's buffer has room (as a
        joined host agent does), waiting for room only when it is full. A tell that waits for
        the buffer to drain can wait for ever on the actors of this session when an ask or a
        reply sends that buffer straight to the socket meanwhile (see the README's note on the
        controller at scale); the heartbeat task hung so, and every host was declared dead."""
        assert self.parent is not None
        try:
            self.parent.tell_nowait(message)
        except MailboxFull:
            await self.parent.tell(message)

    def _not_ready(self, vm: str) -> None:
        if self.ready_at.pop(vm, None) is not None:
            self.ready -= 1

    async def _host_request(self, host: SimHost, request: Any) -> Any:
        match request:
            case StartGuest(config=config):
                vm = config.instance_id
                if vm not in host.guests:
                    host.guests[vm] = config
                    await self._boot(host, vm)
                return 1
            case StartGuests(configs=configs):
                for config in configs:
                    vm = config.instance_id
                    if vm not in host.guests:
                        host.guests[vm] = config
                        await self._boot(host, vm)
                return StartedGuests([StartOutcome(pid=1) for _ in configs])
            case StopGuest(instance_id=vm):
                if vm in host.guests:
                    host.incarnation[vm] = host.incarnation.get(vm, 0) + 1
                    await self._push(host, vm, "StoppingVM")
                    await self._push(host, vm, "StoppedVM")
                    del host.guests[vm]
                    host.status.pop(vm, None)
                return None
            case RestartGuest(instance_id=vm, config=config):
                if config is not None:
                    host.guests[vm] = config
                await self._push(host, vm, "StoppedVM")
                await self._boot(host, vm)
                return 1
            case ApplyGuestEnvironment():
                result: EnvironmentApplied = "applied"
                return result
            case GetHostStatus():
                await host.reports.flush()
                return self._heartbeat_message(host)
        raise RuntimeError(f"the simulator does not handle {type(request).__name__}")

    async def _boot(self, host: SimHost, vm: str) -> None:
        gen = host.incarnation[vm] = host.incarnation.get(vm, 0) + 1
        await self._push(host, vm, "CreatingVM")
        await self._push(host, vm, "StartingVM")
        self._booting.append((host, vm, gen, 0))
        self._boot_wake.set()

    async def _boot_forever(self) -> None:
        """CreatingRole, StartingRole, ReadyRole: a step a round for each guest booting, the
        rounds a checkpoint apart (other tasks and messages run between two steps)."""
        steps = ("CreatingRole", "StartingRole", "ReadyRole")
        while True:
            if not self._booting:
                await self._boot_wake.wait()
                self._boot_wake = anyio.Event()
            await anyio.lowlevel.checkpoint()
            booting, self._booting = self._booting, []
            for host, vm, gen, step in booting:
                if host.incarnation.get(vm) != gen or vm not in host.guests:
                    continue
                await self._push(host, vm, steps[step])
                if step + 1 < len(steps):
                    self._booting.append((host, vm, gen, step + 1))

    def _arm(self, reports: StatusReports) -> None:
        heapq.heappush(self._flushes, (anyio.current_time() + HOLD_SECONDS, next(self._tie), reports))

    async def _push(self, host: SimHost, vm: str, status: Any) -> None:
        if not host.alive:
            return
        starts = 1 if status in ("StartingRole", "ReadyRole", "BusyRole") else 0
        boot = f"{host.config.host_id}/{vm}#{host.incarnation.get(vm, 0)}"
        st = InstanceStatus(status=status, boot=boot, starts=starts, at=anyio.current_time())
        was = host.status.get(vm)
        host.status[vm] = st
        if status == "ReadyRole":
            now = time.time()
            if vm not in self.ready_at:
                self.ready += 1
            self.ready_at[vm] = now
            self.last_ready = max(self.last_ready, now)
        else:
            self._not_ready(vm)
        await host.reports.report(StatusChange(instance_id=vm, status=st), was=was.status if was else "")

    def _heartbeat_message(self, host: SimHost) -> HostHeartbeat:
        host.last_beat = time.time()
        return HostHeartbeat(host_id=host.config.host_id, instances=dict(host.status), pid=0)

    async def _beat_forever(self) -> None:
        """Heartbeat every live host at its own phase: the first beat as it is added, the next
        at a random point of the interval (hosts do not beat in step), then every interval.
        One task for all (a task per host cost the simulator a task switch per beat); it also
        sends the boot steps each host held (fabric.host.reports) once their time is up."""
        beats = self._beats
        while True:
            now = anyio.current_time()
            while beats and beats[0][0] <= now:
                _, _, host, first = heapq.heappop(beats)
                if not host.alive:
                    continue
                assert self.parent is not None
                await host.reports.flush()  # a heartbeat goes after the changes held, as a host's
                await self._tell_controller(self._heartbeat_message(host))
                self.heartbeats += 1
                interval = host.config.settings.host_heartbeat_interval
                later = self.random.uniform(0, interval) if first else interval
                heapq.heappush(beats, (now + later, next(self._tie), host, False))
            flushes = self._flushes
            while flushes and flushes[0][0] <= now:
                await heapq.heappop(flushes)[2].flush_held()
            due = min(beats[0][0] if beats else now + 0.1, flushes[0][0] if flushes else now + 0.1)
            await anyio.sleep(min(0.1, max(0.005, due - anyio.current_time())))


# -- the controller's process -------------------------------------------------------------------


class HostProxy:
    """A Ref target for one stand-in host: its asks travel the simulator's link."""

    def __init__(self, sim: Ref, host_id: str) -> None:
        self._sim = sim._target
        self.host_id = host_id
        self.name = f"host:{host_id}"
        self.timer = self._sim.timer
        self._gone = anyio.Event()
        self._why: BaseException | None = None

    async def deliver(self, message: Any, reply: Any) -> None:
        await self._sim.deliver(ToHost(self.host_id, message), reply)

    def deliver_nowait(self, message: Any, reply: Any) -> None:
        self._sim.deliver_nowait(ToHost(self.host_id, message), reply)

    async def wait_reply(self, reply: Any) -> None:
        await self._sim.wait_reply(reply)

    def request_stop(self) -> None:
        if not self._gone.is_set():
            # The simulator is gone or full: the host is gone anyway.
            with contextlib.suppress(Exception):
                self._sim.deliver_nowait(DropHost(self.host_id), None)
            self._gone.set()

    def end(self, why: BaseException | None) -> None:
        self._why = why
        self._gone.set()

    async def join(self) -> BaseException | None:
        await self._gone.wait()
        return self._why

    @property
    def pid(self) -> int | None:
        return None  # never the simulator's: a host declared dead must not kill the others

    @property
    def faults(self) -> None:
        return None


#: No link pings for the simulators: on a loaded machine a simulator of 10,000 hosts may stall
#: past the ping timeout, and it is measured, not killed (nor the controller, see below).
SIMULATOR_OPTIONS = ProcessOptions(ping_interval=None)


class _NotRoot:
    """os, as fabric.controller.state sees it in the benchmark: not root."""

    @staticmethod
    def geteuid() -> int:
        return 65534


class BenchController(FabricController):
    """The real FabricController whose hosts live in a simulator child process."""

    def __init__(self, state_dir: str, settings: Settings, vm_accounts: bool = False) -> None:
        super().__init__(state_dir, settings, pool="bench", host_factory=self._make_host)
        if not vm_accounts:
            # As root, the controller gives each instance a VM account of its own, from a range
            # of 4,336 uids: 20,000 instances do not fit. The stand-in hosts run no VMs, so the
            # controller does here what it does when not root: it gives none.
            import fabric.controller.model as model_module
            import fabric.controller.state as state_module
            import fabric.guest.instance as instance_module

            state_module.os = _NotRoot()  # type: ignore[assignment]
            instance_module.default_uid = lambda: None  # type: ignore[assignment]
            model_module.proposed_uid = lambda: None  # type: ignore[assignment]
        self._sim: Ref | None = None
        self._sim_lock: anyio.Lock | None = None
        self._proxies: dict[str, HostProxy] = {}
        self._not_ready: dict[str, Any] | None = None  # ReadyCount: the instances not seen Ready

    async def _simulator(self) -> Ref:
        if self._sim is not None:
            return self._sim  # no lock once it runs (a host is made 10,000 times)
        if self._sim_lock is None:
            self._sim_lock = anyio.Lock()
        async with self._sim_lock:
            if self._sim is None:
                self._sim = await self.spawn_process(
                    "benchmarks.controller_scale:Simulator",
                    name="simulator",
                    mailbox_size=100_000,
                    options=SIMULATOR_OPTIONS,
                )
                self.start_soon(self._watch_simulator, self._sim)
            return self._sim

    async def _watch_simulator(self, sim: Ref) -> None:
        why = await sim.join()
        for proxy in self._proxies.values():
            proxy.end(why or ActorDead("the simulator ended"))

    async def _make_host(self, controller: Actor, config: HostConfig) -> Ref:
        sim = await self._simulator()
        await sim.tell(AddHost(config))
        proxy = self._proxies[config.host_id] = HostProxy(sim, config.host_id)
        return Ref(proxy)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Profile):
            import cProfile

            if not message.path:
                self._profile = cProfile.Profile()
                self._profile.enable()
            elif getattr(self, "_profile", None) is not None:
                self._profile.disable()
                self._profile.dump_stats(message.path)
            return None
        if isinstance(message, DeadHosts):
            return sum(1 for host in self.state.hosts.hosts.values() if not host.alive)
        if isinstance(message, ReadyCount):
            # Polled every 50 ms while placing: look only at those not seen Ready yet (a count
            # over all 20,000 instances at each poll was a tenth of the controller's CPU).
            if self._not_ready is None:
                self._not_ready = {inst.vm: inst for _, inst in self.state.instances()}
            for vm in [vm for vm, inst in self._not_ready.items() if inst.status == "ReadyRole"]:
                del self._not_ready[vm]
            return len(self.state._by_vm) - len(self._not_ready)
        if isinstance(message, Template):
            dep = next(iter(self.state.deployments.values()))
            return dep.guest_config(next(iter(dep.instances.values())), self.state_dir, self.settings)
        if isinstance(message, SimAsk):
            self._answer_in_task(lambda: self._sim_ask(message.message))
            return None
        return await super().receive(message)

    def _answer_in_task(self, work: Callable[[], Awaitable[Any]]) -> None:
        """Answer the ask from a task of its own: the simulator's answer comes on the link its
        reports come on, which waits while the mailbox is full, so a mailbox held waiting for
        it never empties (at 10,000 hosts, 4,000 heartbeats a second fill it in 25 s)."""
        reply = self.defer_reply()

        async def run() -> None:
            try:
                reply.resolve(await work())
            except Exception as exc:
                reply.reject(exc)

        self.start_soon(run)

    async def _sim_ask(self, message: Any) -> Any:
        sim = await self._simulator()
        return await sim.ask(message, timeout=600)  # a loaded simulator is slow


class RawPlacer(Actor):
    """The raw baseline's process: the same hosts, asks and reports as a placement, with no
    controller (the reports are dropped as they come), run after the controller is gone."""

    async def receive(self, message: Any) -> Any:
        if isinstance(message, (HostHeartbeat, InstanceStatusChanged, InstanceStatusesChanged)):
            return None  # the hosts' reports: dropped
        if isinstance(message, RawPlace):
            # From a task of its own: the mailbox goes on taking the reports meanwhile.
            reply = self.defer_reply()

            async def run() -> None:
                try:
                    reply.resolve(await self._raw_place(message.n, message.template))
                except Exception as exc:
                    reply.reject(exc)

            self.start_soon(run)
            return None
        return await super().receive(message)

    async def _raw_place(self, n: int, template: GuestConfig) -> float:
        start = time.time()
        sim = await self.spawn_process(
            "benchmarks.controller_scale:Simulator",
            name="simulator-raw",
            mailbox_size=100_000,
            options=SIMULATOR_OPTIONS,
        )
        try:

            async def host(i: int) -> None:
                config = HostConfig(host_id=f"raw-host{i}", cores=8, state_dir="", settings=template.settings)
                await sim.tell(AddHost(config))
                # As the controller starts a host's instances: one StartGuests for both.
                guests = [msgspec.structs.replace(template, instance_id=f"raw-vm{i}-{k}") for k in (0, 1)]
                await sim.ask(ToHost(config.host_id, StartGuests(guests)), timeout=600)

            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(host, i)
            while (await sim.ask(SimStats(), timeout=600)).ready < 2 * n:
                await anyio.sleep(0.05)
            return time.time() - start
        finally:
            with anyio.move_on_after(30, shield=True):
                await sim.stop()


# -- the driver ---------------------------------------------------------------------------------

DEFINITION = """
name = "Scale"
upgrade_domain_count = 5

[[roles]]
name = "Work"
kind = "worker"
vm_size = "Large"
"""

#: --endpoint: the role serves a TCP input endpoint behind the load balancer (every instance
#: gets a local port, and rotation follows each status change)
ENDPOINT = """
[[roles.input_endpoints]]
name = "Http"
protocol = "tcp"
port = {port}
"""

CONFIG = """
service_name = "Scale"

[[roles]]
name = "Work"
instances = {count}
"""


def bench_settings(n: int, heartbeat: float, failure_timeout: float) -> Settings:
    return Settings(
        host_heartbeat_interval=heartbeat,
        host_failure_timeout=failure_timeout,
        max_hosts=n + 1,  # one spare host: a dead host's instances need somewhere to go
        host_cores=8,
        max_instances=2 * n,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def store_size(state: Path) -> int:
    """The store on disk: fabric.db with its write-ahead log (which holds a few MB until a
    checkpoint moves them into the database)."""
    return sum(p.stat().st_size for p in state.glob("fabric.db*") if p.is_file())


def checkpointed_size(state: Path) -> int:
    """The store's size once its write-ahead log is moved into the database (no controller
    has it open): what the goal state takes, without the log's leftovers."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(state / "fabric.db")) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store_size(state)


def cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


async def sim_stats(ctl: Ref, vms: list[str] | None = None) -> Stats:
    found: Stats = await ask(ctl, SimAsk(SimStats(vms=vms or [])), timeout=900)
    return found


async def spawn_controller(
    system: Any, state: Path, settings: Settings, tag: str, vm_accounts: bool, mailbox: int = 100_000
) -> Ref:
    return await system.spawn_process(
        "benchmarks.controller_scale:BenchController",
        name=f"controller-{tag}",
        args=(str(state), settings, vm_accounts),
        mailbox_size=mailbox,
        # The controller logs every status change (as in production): to a file, not the screen.
        # No link pings: a controller that stalls is measured, not killed.
        options=ProcessOptions(log_path=state.parent / f"controller-{tag}.log", ping_interval=None),
    )


async def run_size(system: Any, n: int, root: Path, args: Any) -> dict[str, float]:
    state = root / f"n{n}"
    package = root / f"pkg{n}"
    definition = DEFINITION + (ENDPOINT.format(port=free_port()) if args.endpoint else "")
    write_scale_package(package, definition, CONFIG.format(count=2))
    # A .cspkg, checked against the pool's max_instances with the deployment's configuration (a
    # service folder is packed against the model's default limit of 1,000).
    cspkg = root / f"scale{n}.cspkg"
    build_package(package, cspkg, package / "config.toml")
    settings = bench_settings(n, args.heartbeat, args.failure_timeout)
    out: dict[str, float] = {"n": n}
    ctl = await spawn_controller(system, state, settings, f"{n}a", args.vm_accounts, args.mailbox)
    ctl_proc = psutil.Process(ctl.pid)
    sim_pid = 0
    try:
        # Placement: 2N instances until the simulator reports the last one Ready.
        if args.profile:
            await ask(ctl, Profile(), timeout=60)
        place_spy = (
            spy_on(ctl_proc.pid, f"{args.spy_placement}.{n}", 3600, 100, blocking=True)
            if args.spy_placement
            else None
        )
        ctl_cpu0 = cpu(ctl_proc)
        start = time.time()
        await deploy_scale(ctl, cspkg, CONFIG.format(count=2 * n), args.timeout)
        accepted = time.time() - start
        with anyio.fail_after(args.timeout):
            while True:
                st = await sim_stats(ctl)
                if st.ready >= 2 * n:
                    break
                await anyio.sleep(0.1)
            # Placed once the controller knows it: its backlog of reports handled.
            while await ask(ctl, ReadyCount(), timeout=args.timeout) < 2 * n:
                await anyio.sleep(0.05)
        placed = time.time()
        sim_pid = st.pid
        if place_spy is not None:
            place_spy.send_signal(signal.SIGINT)  # py-spy writes what it recorded and ends
            with contextlib.suppress(subprocess.TimeoutExpired):
                place_spy.wait(timeout=60)
            print(f"  N={n}: py-spy of the placing controller in {args.spy_placement}.{n}", flush=True)
        out["dead_placing"] = await ask(ctl, DeadHosts(), timeout=args.timeout)
        if args.profile:
            await ask(ctl, Profile(f"{args.profile}.{n}"), timeout=60)
            print(f"  N={n}: the controller's profile of placement is in {args.profile}.{n}", flush=True)
        # CPU spent placing: the controller's since the deployment was asked for, the
        # simulator's since it started (the first host was spun up).
        out["placement_cpu"] = cpu(ctl_proc) - ctl_cpu0
        out["placement_sim_cpu"] = cpu(psutil.Process(sim_pid))
        out["placement"] = placed - start
        out["sim_placement"] = st.last_ready - start
        out["accepted"] = accepted
        out["hosts"] = st.hosts
        out["store"] = store_size(state) / 1024  # KiB (with the log: replaced once checkpointed)
        out["cpu_per_instance"] = 1000 * out["placement_cpu"] / (2 * n)  # ms
        print(
            f"  N={n}: placement {out['placement']:.2f} s (accepted in {accepted:.2f} s, the simulator's "
            f"last ReadyRole at {out['sim_placement']:.2f} s; {out['dead_placing']:.0f} hosts declared dead meanwhile), "
            f"{st.hosts} hosts, store {out['store']:.0f} KiB; CPU meanwhile: controller "
            f"{out['placement_cpu']:.1f} s, simulator {out['placement_sim_cpu']:.1f} s; load {load()}",
            flush=True,
        )
        template: GuestConfig = await ask(ctl, Template(), timeout=600)

        # Steady state: every instance Ready, only heartbeats flow.
        await anyio.sleep(args.settle)
        sim_proc = psutil.Process(sim_pid)
        spy = spy_on(ctl_proc.pid, f"{args.spy}.{n}", args.window) if args.spy else None
        beats0 = (await sim_stats(ctl)).heartbeats
        c0, s0, w0 = cpu(ctl_proc), cpu(sim_proc), time.monotonic()
        await anyio.sleep(args.window)
        c1, s1, w1 = cpu(ctl_proc), cpu(sim_proc), time.monotonic()
        beats = (await sim_stats(ctl)).heartbeats - beats0
        out["cpu"] = 100 * (c1 - c0) / (w1 - w0)
        out["sim_cpu"] = 100 * (s1 - s0) / (w1 - w0)
        # per heartbeat: the controller's CPU over the heartbeats the simulator sent meanwhile
        out["cpu_per_beat"] = 1e6 * (c1 - c0) / max(1, beats)  # us
        print(
            f"  N={n}: steady controller CPU {out['cpu']:.1f}% of a core, {out['cpu_per_beat']:.0f} us "
            f"a heartbeat ({beats / (w1 - w0):.0f} a second; simulator {out['sim_cpu']:.1f}%), load {load()}",
            flush=True,
        )
        if spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=30)
            print(f"  N={n}: py-spy of the steady controller in {args.spy}.{n}", flush=True)

        # Heal: a host goes silent; its instances come back Ready elsewhere.
        killed: Killed = await ask(ctl, SimAsk(KillHost()), timeout=900)
        with anyio.fail_after(args.timeout + args.failure_timeout):
            while True:
                st = await sim_stats(ctl, killed.vms)
                if len(st.ready_at) == len(killed.vms):
                    break
                await anyio.sleep(0.1)
        healed = max(st.ready_at.values()) - killed.at
        # The controller may declare it dead host_failure_timeout after its last heartbeat.
        out["heal"] = max(st.ready_at.values()) - (killed.last_beat + args.failure_timeout)
        print(
            f"  N={n}: heal {out['heal']:.2f} s after the failure timeout ({healed:.2f} s after the host "
            f"went silent; host_failure_timeout {args.failure_timeout:g} s), load {load()}",
            flush=True,
        )

        # Recovery: SIGKILL the controller; a fresh one on the same state answers.
        await kill_controller(ctl, sim_pid)
        start = time.time()
        ctl = await spawn_controller(system, state, settings, f"{n}b", args.vm_accounts, args.mailbox)
        await wait_listed(ctl, 2 * n, args.timeout, 0.1)
        out["recovery"] = time.time() - start
        print(f"  N={n}: recovery {out['recovery']:.2f} s, load {load()}", flush=True)
        with anyio.move_on_after(5):
            st = await sim_stats(ctl)
            sim_pid = st.pid
    finally:
        await kill_controller(ctl, sim_pid)
    await raw_baseline(system, n, template, args, out)
    out["store"] = checkpointed_size(state) / 1024
    out["store_per_instance"] = out["store"] * 1024 / (2 * n)
    print(
        f"  N={n}: store {out['store']:.0f} KiB checkpointed, {out['store_per_instance']:.0f} bytes an instance"
    )
    return out


async def raw_baseline(system: Any, n: int, template: GuestConfig, args: Any, out: dict[str, float]) -> None:
    """The same hosts, StartGuests asks (one a host) and reports without the controller
    (``RawPlacer``), once the controller and its simulator are gone: the placement's figures
    beside it."""
    raw = await system.spawn_process(
        "benchmarks.controller_scale:RawPlacer",
        name=f"raw-{n}",
        mailbox_size=100_000,
        options=SIMULATOR_OPTIONS,
    )
    try:
        proc = psutil.Process(raw.pid)
        cpu0 = cpu(proc)
        out["raw"] = await ask(raw, RawPlace(n, template), timeout=args.timeout)
        out["raw_cpu"] = cpu(proc) - cpu0
    finally:
        with anyio.move_on_after(30):
            await raw.stop()
    out["ratio"] = out["placement"] / out["raw"]
    out["cpu_ratio"] = out["placement_cpu"] / out["raw_cpu"]
    print(
        f"  N={n}: raw baseline {out['raw']:.2f} s, its process's CPU {out['raw_cpu']:.1f} s (the same "
        f"hosts, StartGuests asks and reports, no controller): placement {out['ratio']:.2f}x the "
        f"baseline's time, {out['cpu_ratio']:.2f}x its CPU; load {load()}",
        flush=True,
    )


def spy_on(
    pid: int, path: str, seconds: float, rate: int = 50, blocking: bool = False
) -> subprocess.Popen[bytes] | None:
    """--spy: py-spy (beside this interpreter, or on PATH) records ``pid`` for ``seconds``, as
    collapsed stacks (one line a stack, its sample count last) in ``path``."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        print("  --spy: py-spy is not installed (pip install py-spy)", flush=True)
        return None
    command = [exe, "record", *([] if blocking else ["--nonblocking"]), "--format", "raw", "-r", str(rate)]
    command += ["-d", str(max(1, int(seconds))), "-p", str(pid), "-o", path]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def exponent(ns: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log n."""
    pts = [(math.log(n), math.log(y)) for n, y in zip(ns, ys, strict=True) if y > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else float("nan")


FIGURES = [
    ("placement", "placement (s)", "< 10 s"),
    ("raw", "raw baseline (s)", ""),
    ("ratio", "placement/raw", ""),
    ("cpu_ratio", "CPU placing/raw", ""),
    ("cpu_per_instance", "ctl CPU/inst (ms)", ""),
    ("cpu", "steady CPU (% core)", "< 50%"),
    ("cpu_per_beat", "CPU/heartbeat (us)", ""),
    ("heal", "heal (s)", ""),
    ("recovery", "recovery (s)", "< 10 s"),
    ("store", "store (KiB)", ""),
]


async def main(args: Any) -> None:
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([100, 1000] if args.quick else [100, 1000, 10000])
    )
    root = Path(tempfile.mkdtemp(prefix="controller-scale-"))
    print(
        f"controller scale: N = {sizes} hosts (8 cores, heartbeat {args.heartbeat:g} s), "
        f"2 Large instances per host{' with an input endpoint' if args.endpoint else ''}; cpus {os.cpu_count()}, load {load()}",
        flush=True,
    )
    results: list[dict[str, float]] = []
    try:
        async with open_system() as system:
            for n in sizes:
                results.append(await run_size(system, n, root, args))
    except BaseException:
        print(f"failed: the controllers' logs are in {root}", flush=True)
        raise
    if args.keep:
        print(f"the controllers' logs and state are kept in {root}", flush=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"{'N':>7} " + " ".join(f"{label:>20}" for _, label, _ in FIGURES) + f" {'sim CPU':>8}")
    for r in results:
        print(
            f"{int(r['n']):>7} "
            + " ".join(f"{r.get(k, float('nan')):>20.2f}" for k, _, _ in FIGURES)
            + f" {r.get('sim_cpu', float('nan')):>7.1f}%"
        )
    ns = [r["n"] for r in results]
    print(
        f"{'k':>7} "
        + " ".join(f"{exponent(ns, [r[k] for r in results]):>20.2f}" for k, _, _ in FIGURES)
        + "   (cost ~ N^k, least squares on log-log; 1 = linear, 0 for a figure per instance or heartbeat)"
    )
    print(
        "goal at N=10,000: "
        + ", ".join(f"{label} {goal}" for _, label, goal in FIGURES if goal)
        + f"; load average now {load()}"
    )


def cli() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 100, 1,000 only")
    parser.add_argument("--sizes", default="", help="comma-separated N (overrides --quick)")
    parser.add_argument(
        "--vm-accounts",
        action="store_true",
        help="as root, give each instance a VM account (uid) as a real pool does: 4,336 at most",
    )
    parser.add_argument(
        "--profile",
        default="",
        help="write a cProfile of the controller while placing to PROFILE.<N> (slower)",
    )
    parser.add_argument("--spy", default="", help="py-spy the controller's steady window into SPY.<N>")
    parser.add_argument(
        "--spy-placement", default="", help="py-spy the controller while placing into SPY_PLACEMENT.<N>"
    )
    parser.add_argument("--keep", action="store_true", help="keep the controllers' logs and state")
    parser.add_argument("--mailbox", type=int, default=100_000, help="the controller's mailbox size")
    parser.add_argument("--endpoint", action="store_true", help="the role has a TCP input endpoint")
    parser.add_argument("--heartbeat", type=float, default=2.5, help="host heartbeat interval (s)")
    # 30 s, not 10: the one simulator process of 10,000 hosts, starved on a loaded machine, can
    # fall 10 s behind with every host's heartbeats (a real host would not), and the controller
    # rightly declares those hosts dead (see "hosts declared dead meanwhile").
    parser.add_argument("--failure-timeout", type=float, default=30.0, help="host_failure_timeout (s)")
    parser.add_argument("--settle", type=float, default=3.0, help="wait before the CPU window (s)")
    parser.add_argument("--window", type=float, default=10.0, help="CPU measuring window (s)")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase (s)")
    anyio.run(main, parser.parse_args(), backend="trio")


if __name__ == "__main__":
    # Run as the module the child processes import, so the messages are the same classes.
    from benchmarks.controller_scale import cli as module_cli

    module_cli()
