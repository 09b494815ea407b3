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
import anyio.to_thread
import msgspec

from fabric.chaos import tree
from fabric.chaos.client import ChaosClient
from fabric.chaos.journal import Journal, write_journal
from fabric.chaos.load import HttpLoad, stats
from fabric.chaos.messages import EndpointTargets, FaultRecord, TargetMap, WatchEvent
from fabric.chaos.probes import PhaseState, evaluate, ready_needed, skipped
from fabric.chaos.report import FaultOutcome, Leftover, Report, RunStatus, Timings, outcome_timings
from fabric.chaos.scenario import PHASES, Scenario, ScenarioError
from fabric.chaos.schedule import PlannedFault, Topology, plan
from fabric.frontend.client import ClientError

#: how often the runner collects watch events and looks at the process tree
POLL = 0.5


@dataclass
class Run:
    """One run to make: a scenario, a seed, and optionally a schedule to replay."""

    scenario: Scenario
    scenario_file: str
    seed: int
    duration: float | None = None
    schedule: list[PlannedFault] | None = None
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
    client: ChaosClient, service: str | None, slot: str, needed: int | None, timeout: float
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
    """Run ``run`` against the fabric serving ``state_dir``; the report (left_behind: processes
    seen in the run that are alive but no longer in the fabric's tree)."""
    s = run.scenario
    service, slot = run.target or (s.service.name, s.service.slot)
    steady = s.steady_state
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    async with ChaosClient(state_dir) as client:
        run.progress("waiting for every instance to be Ready")
        targets, waited = await wait_ready(client, service, slot, None, steady.recovery_timeout)
        if waited is None:
            raise ScenarioError(
                f"the deployment is not Ready after {steady.recovery_timeout:g} s: "
                + ", ".join(f"{i.id} {i.status}" for i in targets.instances)
            )
        service, slot = targets.service, targets.slot
        topology = run.topology or Topology.of(_counts(targets))
        schedule = run.schedule if run.schedule is not None else plan(s, run.seed, topology, run.duration)
        journal = Journal(
            scenario_file=run.scenario_file, scenario=s, seed=run.seed, duration=run.length,
            topology=topology, schedule=schedule,
        )  # fmt: skip
        if run.journal is not None:
            await anyio.to_thread.run_sync(write_journal, run.journal, journal)
        endpoint = pick_endpoint(targets, s.load.endpoint)
        load = HttpLoad(
            endpoint.host, endpoint.port, s.load.path, s.load.rate, s.load.concurrency, s.load.timeout,
            max_requests=int(s.load.rate * (steady.before + run.length + steady.after + steady.recovery_timeout)) + 100,
        )  # fmt: skip
        watch = await client.watch(service, slot, lease=30.0)
        events: list[WatchEvent] = list(watch.events)
        offset = watch.now - anyio.current_time()  # fabric clock minus ours
        cursor = watch.next
        outcomes: list[FaultOutcome] = []
        records: list[tuple[int, FaultRecord]] = []
        rollbacks: list[str] = []
        phases: dict[str, PhaseState] = {}
        status: RunStatus = "completed"
        recovery: float | None = None
        n_instances = len(targets.instances)

        async def follow() -> None:
            nonlocal cursor
            while True:
                await anyio.sleep(POLL)
                batch = await client.poll(watch.id, cursor)
                events.extend(batch.events)
                cursor = batch.next

        async def look() -> None:
            while True:
                found = await anyio.to_thread.run_sync(tree.scan, targets.fabric_pid)
                run.seen.update({(p.pid, p.started): p.name for p in found.procs})
                await anyio.sleep(POLL)

        if not await load.warm_up(steady.recovery_timeout):
            raise ScenarioError(
                f"no request to {endpoint.name} ({endpoint.host}:{endpoint.port}{s.load.path}) succeeded "
                f"in {steady.recovery_timeout:g} s: check load.path, or the role's site"
            )
        async with anyio.create_task_group() as tg:
            tg.start_soon(load.run)
            tg.start_soon(follow)
            tg.start_soon(look)
            try:
                run.progress(
                    f"steady state before: {steady.before:g} s of load on {endpoint.name} ({endpoint.port})"
                )
                b0 = anyio.current_time()
                await anyio.sleep(steady.before)
                b1 = anyio.current_time()
                now = await client.targets(service, slot)
                await load.settled(b1)  # the requests of the window count once they end
                phases["before"] = evaluate(
                    steady.probes, "before", b1 - b0, load.window(b0, b1), _ready(now), n_instances
                )
                m0 = m1 = anyio.current_time()
                if not phases["before"].held:
                    status = "aborted"
                    run.progress("the steady state does not hold before the method: no fault injected")
                else:
                    with anyio.CancelScope() as method:
                        tg.start_soon(_cancel_on, run.interrupt, method)
                        await _method(client, run, schedule, m0, outcomes, records)
                    m1 = anyio.current_time()
                    if method.cancelled_caught:
                        status = "interrupted"
            finally:
                with anyio.CancelScope(shield=True):
                    rollbacks = await _rollback(client, s, records, service, slot, state_dir)
                    for planned in schedule[len(outcomes) :]:
                        outcomes.append(_not_run(planned))
            if status == "completed":
                run.progress("waiting for recovery")
                needed = ready_needed(steady.probes, n_instances)
                _, recovery = await wait_ready(client, service, slot, needed, steady.recovery_timeout)
                a0 = anyio.current_time()
                await anyio.sleep(steady.after)
                a1 = anyio.current_time()
                now = await client.targets(service, slot)
                await load.stop()  # requests under way finish and count
                phases["after"] = evaluate(
                    steady.probes, "after", a1 - a0, load.window(a0, a1), _ready(now), n_instances
                )
            await load.stop()
            tg.cancel_scope.cancel()
        last = await client.stop_watch(watch.id, cursor)
        events.extend(last.events)
        if status == "completed" or status == "interrupted":
            fewest = _fewest_ready(events, m0 + offset, m1 + offset)
            phases["during"] = evaluate(
                steady.probes, "during", m1 - m0, load.window(m0, m1), fewest, n_instances
            )
        for phase in PHASES:
            phases.setdefault(phase, skipped(phase, steady.probes))
        current = await anyio.to_thread.run_sync(tree.scan, targets.fabric_pid)
    timings = outcome_timings(records, events)
    current_keys = current.keys()
    outcomes = [_timed(o, timings) for o in outcomes]
    notes = []
    if recovery is None and status == "completed":
        notes.append(f"instances were not all Ready {steady.recovery_timeout:g} s after the rollbacks")
    alive = await anyio.to_thread.run_sync(tree.still_alive, list(run.seen))
    left = [Leftover(pid=p, name=run.seen[(p, t)], started=t) for p, t in alive if (p, t) not in current_keys]
    held = status == "completed" and all(p.held for p in phases.values()) and not left
    report = Report(
        title=s.title, scenario=run.scenario_file, seed=run.seed, duration=run.length, started=started,
        status=status, hypothesis=steady.title, held=held,
        steady_state={k: phases[k] for k in ("before", "during", "after")}, faults=outcomes,
        requests=stats(load.samples), recovery=recovery, rollbacks=rollbacks, left_behind=left, notes=notes,
    )  # fmt: skip
    if run.journal is not None:
        final = msgspec.structs.replace(journal, report=report)
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


async def _method(
    client: ChaosClient,
    run: Run,
    schedule: list[PlannedFault],
    m0: float,
    outcomes: list[FaultOutcome],
    records: list[tuple[int, FaultRecord]],
) -> None:
    """Inject each planned fault at its time; then wait out the method's duration."""
    for planned in schedule:
        if planned.at >= run.length:
            break
        await anyio.sleep(max(0.0, m0 + planned.at - anyio.current_time()))
        sent = anyio.current_time() - m0
        kind = str(type(planned.inject.fault).__struct_config__.tag)
        try:
            record = await client.inject(planned.inject)
        except ClientError as exc:
            outcomes.append(FaultOutcome(
                n=planned.n, label=planned.inject.label, kind=kind, planned_at=planned.at, applied_at=sent,
                outcome="refused", error=str(exc),
            ))  # fmt: skip
            run.progress(f"t={planned.at:6.2f} {planned.inject.label}: refused: {exc}")
            continue
        records.append((planned.n, record))
        outcomes.append(FaultOutcome(
            n=planned.n, label=planned.inject.label, kind=kind, planned_at=planned.at, applied_at=sent,
            outcome="applied", record=record,
        ))  # fmt: skip
        run.progress(f"t={planned.at:6.2f} {planned.inject.label}: {record.detail}")
    await anyio.sleep(max(0.0, m0 + run.length - anyio.current_time()))


async def _rollback(
    client: ChaosClient,
    scenario: Scenario,
    records: list[tuple[int, FaultRecord]],
    service: str | None,
    slot: str,
    state_dir: Path,
) -> list[str]:
    """Undo every lasting fault of this run still in force, then the scenario's rollbacks."""
    done: list[str] = []
    for _, record in records:
        if record.state != "active":
            continue
        try:
            for undone in await client.undo(record.id):
                if undone.undone_at is not None and undone.state in ("undone", "failed"):
                    done.append(
                        f"{undone.id} {undone.label}: {undone.detail.partition('; undone: ')[2] or undone.detail}"
                    )
        except ClientError as exc:
            done.append(f"{record.id} {record.label}: could not undo: {exc}")
    for action in scenario.rollbacks:
        try:
            if action.action == "undo":
                done.append(f"undo: {len(await client.undo())} fault(s) undone")
            elif action.action == "reboot" and action.instance and service:
                from fabric.frontend.client import FabricClient

                def reboot(name: str = action.instance) -> str:
                    with FabricClient(state_dir) as fc:
                        return fc.instance_action(service, slot, name, "reboot")  # type: ignore[arg-type]

                await anyio.to_thread.run_sync(reboot)
                done.append(f"reboot {action.instance}: accepted")
        except ClientError as exc:
            done.append(f"{action.action}: failed: {exc}")
    return done


def _not_run(planned: PlannedFault) -> FaultOutcome:
    kind = str(type(planned.inject.fault).__struct_config__.tag)
    return FaultOutcome(
        n=planned.n, label=planned.inject.label, kind=kind, planned_at=planned.at, outcome="not run"
    )


def _timed(outcome: FaultOutcome, timings: dict[int, Timings]) -> FaultOutcome:
    found = timings.get(outcome.n)
    if found is None:
        return outcome
    per_instance, detect, leave, recover = found
    return msgspec.structs.replace(
        outcome, instances=per_instance, detect=detect, leave_rotation=leave, recover=recover
    )
