"""Running a scenario against a fabric: steady state before, the method under load, rollbacks,
recovery, steady state after, and the report.

``run_on(state_dir, run)`` talks to a running fabric through its API; ``run_embedded`` starts
one (open_fabric), deploys the scenario's service, runs, and stops it all. Every fault the run
injected is undone in a shielded ``finally``, so an interrupted or failing run leaves nothing
broken; the fabric's chaos agent also ends each lasting fault at its planned end on its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import msgspec

from fabric.chaos.control import PlannedControl, apply_all, plan_control
from fabric.chaos.control import not_run as control_not_run
from fabric.chaos.following import FollowingTransport
from fabric.chaos.journal import Journal, write_journal
from fabric.chaos.load import HttpLoad, stats
from fabric.chaos.method import inject_all, not_run, roll_back, timed
from fabric.chaos.probes import PhaseState, evaluate, ready_needed, skipped
from fabric.chaos.replicas import running_replicas
from fabric.chaos.report import (
    FaultOutcome,
    Leftover,
    Report,
    RunStatus,
    availability_points,
    outcome_timings,
)
from fabric.chaos.scenario import PHASES, Phase, Scenario, ScenarioError
from fabric.chaos.schedule import PlannedFault, Topology, plan
from fabric.client import AsyncFabricClient, ClientError
from fabric.controller.chaos import tree
from fabric.controller.chaos.messages import EndpointTargets, FaultRecord, TargetMap, WatchEvent

#: how often the runner collects watch events and looks at the process tree
POLL = 0.5
#: undoing what a run injected: a few API calls, each answered at once by a fabric that runs;
#: past this the fabric is not answering, and the report says the rollbacks were cut
ROLLBACK_TIMEOUT = 60.0


@dataclass
class Run:
    """One run to make: a scenario, a seed, and optionally a schedule to replay."""

    scenario: Scenario
    scenario_file: str
    seed: int
    duration: float | None = None
    schedule: list[PlannedFault] | None = None
    #: the control-plane faults to replay (None: planned from the seed)
    control: list[PlannedControl] | None = None
    topology: Topology | None = None
    journal: Path | None = None
    #: the (hosted service, slot) to hit; default: the scenario's, or the only deployment
    target: tuple[str | None, str] | None = None
    progress: Callable[[str], None] = lambda line: None
    #: set it to stop the method early (Ctrl-C): rollbacks still run and a report is made
    interrupt: anyio.Event = field(default_factory=anyio.Event)
    #: every (pid, start time) -> name seen in the fabric's tree during the run
    seen: dict[tuple[int, float], str] = field(default_factory=dict)

    @property
    def length(self) -> float:
        """The method's duration."""
        return self.duration if self.duration is not None else self.scenario.duration


def pick_endpoint(targets: TargetMap, wanted: str | None) -> EndpointTargets:
    """The load-balanced endpoint the load goes to.

    Raises:
        ScenarioError: no such endpoint, or none at all.
    """
    for ep in targets.endpoints:
        if wanted in (ep.name, ep.name.split("/")[-1]) or (wanted is None and ep.protocol in ("http", "tcp")):
            return ep
    names = ", ".join(e.name for e in targets.endpoints) or "none"
    raise ScenarioError(f"load.endpoint {wanted!r}: the deployment's load-balanced endpoints are {names}")


def _ready(targets: TargetMap) -> int:
    return sum(1 for i in targets.instances if i.status == "ReadyRole")


def _fewest_ready(events: list[WatchEvent], start: float, end: float) -> int:
    """The fewest ReadyRole instances at any time in [start, end] (fabric clock)."""
    status: dict[str, str] = {}
    for e in (e for e in events if e.t <= start):
        status[e.instance] = e.status
    fewest = sum(1 for s in status.values() if s == "ReadyRole")
    for e in (e for e in events if start < e.t <= end):
        status[e.instance] = e.status
        fewest = min(fewest, sum(1 for s in status.values() if s == "ReadyRole"))
    return fewest


async def wait_ready(
    client: AsyncFabricClient, service: str | None, slot: str, needed: int | None, timeout: float
) -> tuple[TargetMap, float | None]:
    """Poll until ``needed`` instances (None: all) are ReadyRole; the map and how long it took
    (None: not within ``timeout``)."""
    start = anyio.current_time()
    with anyio.move_on_after(timeout):
        while True:
            targets = await client.targets(service, slot)
            want = len(targets.instances) if needed is None else needed
            if targets.instances and _ready(targets) >= want:
                return targets, anyio.current_time() - start
            await anyio.sleep(0.1)
    return await client.targets(service, slot), None


async def run_on(state_dir: Path, run: Run) -> Report:
    """Run ``run`` against the fabric serving ``state_dir`` and return its report.

    ``left_behind`` lists the processes seen in the fabric's tree during the run that are
    still alive but no longer part of it (an embedded run checks again once its fabric stopped).

    Raises:
        ScenarioError: the deployment is not Ready, or no request gets through its endpoint.
        ClientError: the fabric cannot be reached.
    """
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # Controller replicas: the client follows them (any replica's address, through an election)
    replicas = await anyio.to_thread.run_sync(running_replicas, state_dir)
    transport = FollowingTransport(state_dir) if replicas else None
    async with AsyncFabricClient(state_dir, transport=transport) as client:
        session = await _Session.prepare(client, run, state_dir)
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.load.run)
            tg.start_soon(session.follow)
            tg.start_soon(session.look)
            await session.play(tg)
            await session.load.stop()
            tg.cancel_scope.cancel()
        await session.finish()
    return await session.report(started)


@dataclass
class _Session:
    """One run under way: its fabric, schedule, load, watch, and what it found so far."""

    client: AsyncFabricClient
    run: Run
    state_dir: Path
    targets: TargetMap
    journal: Journal
    endpoint: EndpointTargets
    load: HttpLoad
    watch_id: str = ""
    cursor: int = 0
    #: the fabric's clock minus ours (the first leader's: every time is kept on its clock)
    offset: float = 0.0
    #: the clock of the leader watched now minus the first one's (a new leader after a failover)
    shift: float = 0.0
    #: control-plane faults (fabric.chaos.control) and their outcomes
    control: list[PlannedControl] = field(default_factory=list)
    control_outcomes: list[FaultOutcome] = field(default_factory=list)
    events: list[WatchEvent] = field(default_factory=list)
    outcomes: list[FaultOutcome] = field(default_factory=list)
    records: list[tuple[int, FaultRecord]] = field(default_factory=list)
    rollbacks: list[str] = field(default_factory=list)
    phases: dict[str, PhaseState] = field(default_factory=dict)
    status: RunStatus = "completed"
    recovery: float | None = None
    window: tuple[float, float] = (0.0, 0.0)
    current: set[tuple[int, float]] = field(default_factory=set)

    @classmethod
    async def prepare(cls, client: AsyncFabricClient, run: Run, state_dir: Path) -> _Session:
        """Wait until the deployment is Ready, plan, write the journal, warm up, start watching."""
        s, steady = run.scenario, run.scenario.steady_state
        service, slot = run.target or (s.service.name, s.service.slot)
        run.progress("waiting for every instance to be Ready")
        targets, waited = await wait_ready(client, service, slot, None, steady.recovery_timeout)
        if waited is None:
            states = ", ".join(f"{i.id} {i.status}" for i in targets.instances)
            raise ScenarioError(f"the deployment is not Ready after {steady.recovery_timeout:g} s: {states}")
        topology = run.topology or Topology.of(_counts(targets))
        schedule = run.schedule if run.schedule is not None else plan(s, run.seed, topology, run.duration)
        control = (
            run.control if run.control is not None else plan_control(s, run.seed, len(schedule), run.duration)
        )
        journal = Journal(
            scenario_file=run.scenario_file, scenario=s, seed=run.seed, duration=run.length,
            topology=topology, schedule=schedule, control=control,
        )  # fmt: skip
        if run.journal is not None:
            await anyio.to_thread.run_sync(write_journal, run.journal, journal)
        endpoint = pick_endpoint(targets, s.load.endpoint)
        total = steady.before + run.length + steady.after + steady.recovery_timeout
        load = HttpLoad(
            endpoint.host, endpoint.port, s.load.path, s.load.rate, s.load.concurrency, s.load.timeout,
            max_requests=int(s.load.rate * total) + 100,
        )  # fmt: skip
        if not await load.warm_up(steady.recovery_timeout):
            raise ScenarioError(
                f"no request to {endpoint.name} ({endpoint.host}:{endpoint.port}{s.load.path}) succeeded "
                f"in {steady.recovery_timeout:g} s: check load.path, or the role's site"
            )
        session = cls(client, run, state_dir, targets, journal, endpoint, load, control=control)
        batch = await client.watch(targets.service, targets.slot, lease=30.0)
        session.watch_id, session.cursor, session.events = batch.id, batch.next, list(batch.events)
        session.offset = batch.now - anyio.current_time()
        return session

    async def follow(self) -> None:
        """Collect the watch's events as they come (watching again on a new leader: a watch
        lives in the controller that made it)."""
        while True:
            await anyio.sleep(POLL)
            try:
                batch = await self.client.poll(self.watch_id, self.cursor)
            except ClientError as exc:
                self.run.progress(f"the watch is gone ({exc}); watching again")
                await self._watch_again()
                continue
            self.events.extend(self._ours(batch.events))
            self.cursor = batch.next

    async def _watch_again(self) -> None:
        while True:
            try:
                self.targets = await self.client.targets(self.targets.service, self.targets.slot)
                batch = await self.client.watch(self.targets.service, self.targets.slot, lease=30.0)
                break
            except ClientError:
                await anyio.sleep(POLL)
        self.shift = batch.now - anyio.current_time() - self.offset
        self.watch_id, self.cursor = batch.id, batch.next
        self.events.extend(self._ours(batch.events))

    def _ours(self, events: list[WatchEvent]) -> list[WatchEvent]:
        """Events on the first leader's clock."""
        if not self.shift:
            return list(events)
        return [msgspec.structs.replace(e, t=e.t - self.shift) for e in events]

    def _record_ours(self, record: FaultRecord) -> FaultRecord:
        """A fault record on the first leader's clock."""
        return msgspec.structs.replace(record, at=record.at - self.shift) if self.shift else record

    async def look(self) -> None:
        """Remember every process of the fabric's tree, to find any left behind at the end."""
        while True:
            found = await anyio.to_thread.run_sync(tree.scan, self.targets.fabric_pid)
            self.run.seen.update({(p.pid, p.started): p.name for p in found.procs})
            await anyio.sleep(POLL)

    async def measure(self, phase: Phase, seconds: float) -> PhaseState:
        """``seconds`` of load, then the phase's probes on it."""
        start = anyio.current_time()
        await anyio.sleep(seconds)
        end = anyio.current_time()
        now = await self.client.targets(self.targets.service, self.targets.slot)
        await self.load.settled(end)  # the requests of the window count once they end
        probes = self.run.scenario.steady_state.probes
        return evaluate(
            probes, phase, end - start, self.load.window(start, end), _ready(now), len(now.instances)
        )

    async def play(self, tg: anyio.abc.TaskGroup) -> None:
        """Before, the method, rollbacks (always), recovery and after."""
        run, steady = self.run, self.run.scenario.steady_state
        schedule = self.journal.schedule
        try:
            run.progress(f"steady state before: {steady.before:g} s of load on {self.endpoint.name}")
            self.phases["before"] = await self.measure("before", steady.before)
            if not self.phases["before"].held:
                self.status = "aborted"
                run.progress("the steady state does not hold before the method: no fault injected")
                return
            m0 = anyio.current_time()
            with anyio.CancelScope() as method:
                tg.start_soon(_cancel_on, run.interrupt, method)
                async with anyio.create_task_group() as control:
                    control.start_soon(
                        apply_all, self.state_dir, self.control, m0, run.length, run.progress,
                        self.control_outcomes,
                    )  # fmt: skip
                    await inject_all(
                        self.client, schedule, m0, run.length, run.progress, self.outcomes, self.records,
                        self._record_ours,
                    )  # fmt: skip
            self.window = (m0, anyio.current_time())
            if method.cancelled_caught:
                self.status = "interrupted"
                return
        finally:
            with anyio.move_on_after(ROLLBACK_TIMEOUT, shield=True) as rolling_back:
                self.rollbacks = await roll_back(
                    self.client,
                    run.scenario,
                    self.records,
                    self.targets.service,
                    self.targets.slot,
                )
            if rolling_back.cancel_called:
                self.rollbacks.append(
                    f"rollbacks cut after {ROLLBACK_TIMEOUT:g} s: the fabric did not answer"
                )
            self.outcomes += [not_run(planned) for planned in schedule[len(self.outcomes) :]]
            applied = {o.n for o in self.control_outcomes}
            self.control_outcomes += [control_not_run(p) for p in self.control if p.n not in applied]
        run.progress("waiting for recovery")
        needed = ready_needed(steady.probes, len(self.targets.instances))
        _, self.recovery = await wait_ready(
            self.client, self.targets.service, self.targets.slot, needed, steady.recovery_timeout
        )
        self.phases["after"] = await self.measure("after", steady.after)

    async def finish(self) -> None:
        """End the watch; judge the method's window on all its events."""
        try:
            last = await self.client.stop_watch(self.watch_id, self.cursor)
            self.events.extend(self._ours(last.events))
        except ClientError as exc:  # its leader went away at the end
            self.run.progress(f"the watch could not be read to its end: {exc}")
        if self.status != "aborted":
            m0, m1 = self.window
            fewest = _fewest_ready(self.events, m0 + self.offset, m1 + self.offset)
            probes = self.run.scenario.steady_state.probes
            samples = self.load.window(m0, m1)
            self.phases["during"] = evaluate(
                probes, "during", m1 - m0, samples, fewest, len(self.targets.instances)
            )
        for phase in PHASES:
            self.phases.setdefault(phase, skipped(phase, self.run.scenario.steady_state.probes))
        self.current = (await anyio.to_thread.run_sync(tree.scan, self.targets.fabric_pid)).keys()

    async def report(self, started: str) -> Report:
        """The report; the journal is written again with it."""
        run, s = self.run, self.run.scenario
        timings = outcome_timings(self.records, self.events)
        outcomes = [timed(o, timings) for o in self.outcomes] + self.control_outcomes
        outcomes.sort(key=lambda o: (o.planned_at, o.n))
        notes = []
        if self.recovery is None and self.status == "completed":
            notes.append(
                f"instances were not all Ready {s.steady_state.recovery_timeout:g} s after the rollbacks"
            )
        alive = await anyio.to_thread.run_sync(tree.still_alive, list(run.seen))
        left = [
            Leftover(pid=p, name=run.seen[(p, t)], started=t) for p, t in alive if (p, t) not in self.current
        ]
        held = self.status == "completed" and all(p.held for p in self.phases.values()) and not left
        report = Report(
            title=s.title, scenario=run.scenario_file, seed=run.seed, duration=run.length, started=started,
            status=self.status, hypothesis=s.steady_state.title, held=held,
            steady_state={k: self.phases[k] for k in PHASES}, faults=outcomes, requests=stats(self.load.samples),
            recovery=self.recovery, rollbacks=self.rollbacks, left_behind=left, notes=notes,
            availability=availability_points(self.events, self.window[0] + self.offset),
        )  # fmt: skip
        if run.journal is not None:
            final = msgspec.structs.replace(self.journal, report=report)
            await anyio.to_thread.run_sync(write_journal, run.journal, final)
        return report


def _counts(targets: TargetMap) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inst in targets.instances:
        counts[inst.role] = counts.get(inst.role, 0) + 1
    return counts


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
