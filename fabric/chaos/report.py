"""The report of a chaos run, as JSON (a msgspec Struct) and as text.

Per fault, from the watch's record of every instance change (fabric clock, so a fault's time
and its effects compare exactly): time to detect (the instance's status or host changed), time
to leave rotation, time to recover (back in rotation; for a role without a load-balanced
endpoint, ReadyRole again). The search for a fault's effects on an instance stops at the next
fault that hits the same instance.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from fabric.chaos.load import LoadStats
from fabric.chaos.probes import PhaseState
from fabric.controller.chaos.messages import FaultRecord, WatchEvent

RunStatus = Literal["completed", "aborted", "interrupted"]


class InstanceTiming(msgspec.Struct, frozen=True, kw_only=True):
    """What one fault did to one instance, in seconds after the fault."""

    instance: str
    detect: float | None = None
    leave_rotation: float | None = None
    recover: float | None = None
    #: the statuses it went through until it recovered
    statuses: list[str] = []
    #: in rotation when the fault struck (None: its role has no load-balanced endpoint, or unknown)
    rotation: bool | None = None


class FaultOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One planned fault: when it was meant and applied (s after the method started), what it hit."""

    n: int
    label: str
    kind: str
    planned_at: float
    applied_at: float | None = None
    outcome: Literal["applied", "refused", "not run"]
    error: str = ""
    record: FaultRecord | None = None
    #: what a fault the runner applied itself did (a control-plane fault has no record)
    detail: str = ""
    detect: float | None = None
    leave_rotation: float | None = None
    recover: float | None = None
    instances: list[InstanceTiming] = []


class Leftover(msgspec.Struct, frozen=True, kw_only=True):
    """A process of the run still alive when it should not be."""

    pid: int
    name: str
    started: float


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """A chaos run's report (``fabric chaos run --json``)."""

    title: str
    scenario: str
    seed: int
    duration: float
    started: str
    status: RunStatus
    hypothesis: str
    held: bool
    steady_state: dict[str, PhaseState]
    faults: list[FaultOutcome]
    requests: LoadStats
    recovery: float | None = None
    rollbacks: list[str] = []
    left_behind: list[Leftover] = []
    notes: list[str] = []
    #: (seconds after the method started, fraction of instances available) at each change: in
    #: rotation, or ReadyRole for a role without a load-balanced endpoint (the --html chart)
    availability: list[tuple[float, float]] = []


def availability_points(events: list[WatchEvent], start: float) -> list[tuple[float, float]]:
    """The fraction of instances available after each change, in seconds after ``start`` (the
    fabric's clock): an instance is available while in rotation (ReadyRole when its role has
    no load-balanced endpoint)."""
    up: dict[str, bool] = {}
    points: list[tuple[float, float]] = []
    for e in sorted(events, key=lambda e: e.t):
        up[e.instance] = e.rotation if e.rotation is not None else e.status == "ReadyRole"
        points.append((e.t - start, sum(up.values()) / len(up)))
    return points


def instance_timing(
    at: float, instance: str, events: list[WatchEvent], horizon: float = math.inf
) -> InstanceTiming:
    """What happened to ``instance`` after a fault at ``at`` (fabric clock), up to ``horizon``."""
    mine = [e for e in events if e.instance == instance]
    base = next((e for e in reversed(mine) if e.t <= at), None)
    later = [e for e in mine if at < e.t < horizon]
    if base is None:
        if not later:
            return InstanceTiming(instance=instance)
        base, later = later[0], later[1:]
    detect = leave = recover = None
    statuses: list[str] = []
    for e in later:
        if (e.status, e.host) != (base.status, base.host) and detect is None:
            detect = e.t - at
        if base.rotation and e.rotation is False and leave is None:
            leave = e.t - at
        if detect is not None or leave is not None:
            if not statuses or statuses[-1] != e.status:
                statuses.append(e.status)
            back = e.rotation is True if base.rotation else e.status == "ReadyRole"
            if back and (leave is not None or not base.rotation):
                recover = e.t - at
                break
    return InstanceTiming(
        instance=instance,
        detect=detect,
        leave_rotation=leave,
        recover=recover,
        statuses=statuses,
        rotation=base.rotation,
    )


#: per-instance timings, then the fault's first detect, first leave and last recover
Timings = tuple[list[InstanceTiming], float | None, float | None, float | None]


def outcome_timings(records: list[tuple[int, FaultRecord]], events: list[WatchEvent]) -> dict[int, Timings]:
    """For each applied fault (by its number): per-instance timings and the fault's summary
    (first detect, first leave, last recover)."""
    out: dict[int, Timings] = {}
    for n, record in records:
        timings = []
        for instance in record.instances:
            nxt = [r.at for _, r in records if r.at > record.at and instance in r.instances]
            timings.append(instance_timing(record.at, instance, events, min(nxt, default=math.inf)))
        detects = [t.detect for t in timings if t.detect is not None]
        leaves = [t.leave_rotation for t in timings if t.leave_rotation is not None]
        hit = [t for t in timings if t.detect is not None or t.leave_rotation is not None]
        recovers = [t.recover for t in hit if t.recover is not None]
        recover = max(recovers) if hit and len(recovers) == len(hit) else None
        out[n] = (timings, min(detects, default=None), min(leaves, default=None), recover)
    return out


# -- text --------------------------------------------------------------------------------------------


def _s(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return f"{value:.3f}{unit}" if unit == "s" else f"{value}{unit}"


def _leave(f: FaultOutcome) -> str:
    """Time to leave rotation, or why there is none: "-" alone read as a rotation leave missed."""
    if f.leave_rotation is not None or not f.instances:
        return _s(f.leave_rotation)
    if all(t.rotation is None for t in f.instances):
        return "n/a (no load-balanced endpoint)"
    if not any(t.rotation for t in f.instances):
        return "- (already out of rotation)"
    return "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def render(report: Report) -> str:
    """The report as text, for a terminal or a log."""
    out = [
        f"chaos run: {report.title} (seed {report.seed}, {report.duration:g} s, {report.status})",
        f"scenario: {report.scenario}; started {report.started}",
        "",
        f"steady state: {report.hypothesis}",
        f"  {'phase':<8}{'secs':>6}{'sent':>7}{'ok':>7}{'failed':>7}{'avail':>9}{'p50':>9}{'p99':>9}{'ready':>7}  held",
    ]
    for phase, st in report.steady_state.items():
        if st.status == "skipped":
            out.append(f"  {phase:<8}  (not run)")
            continue
        load = st.load
        out.append(
            f"  {phase:<8}{st.seconds:>6.1f}{load.sent:>7}{load.succeeded:>7}{load.failed:>7}"
            f"{_pct(load.availability):>9}{_s(load.p50):>9}{_s(load.p99):>9}{f'{st.ready}/{st.instances}':>7}"
            f"  {'yes' if st.held else 'NO'}"
        )
        for probe in st.probes:
            mark = ("ok" if probe.ok else "FAILED") if probe.judged else "(not judged)"
            value = "-" if probe.value is None else f"{probe.value:.4g}"
            out.append(f"      {probe.name}: {value} (tolerance {probe.tolerance}) {mark}")
    out += [
        "",
        f"faults ({len(report.faults)}): time to detect / leave rotation / recover, s after the fault",
    ]
    for f in report.faults:
        when = f"t={f.planned_at:6.2f}"
        if f.outcome != "applied":
            out.append(f"  {f.n:>3} {when} {f.label}: {f.outcome} {f.error}")
            continue
        hit = ", ".join(
            f"{h.name}" + (f" pid {h.pid}" if h.pid else "") for h in (f.record.hits if f.record else [])
        )
        out.append(
            f"  {f.n:>3} {when} {f.label} -> {hit or f.detail or '-'}: "
            f"detect {_s(f.detect)}, leave {_leave(f)}, recover {_s(f.recover)}"
        )
    req = report.requests
    out += [
        "",
        f"requests through the load balancer: {req.sent} sent, {req.succeeded} succeeded, {req.failed} failed; "
        f"availability {_pct(req.availability)}" + (f"; errors {req.errors}" if req.errors else ""),
    ]
    if report.recovery is not None:
        out.append(f"recovery after rollback: {report.recovery:.2f} s")
    for line in report.rollbacks:
        out.append(f"rollback: {line}")
    if report.left_behind:
        left = ", ".join(f"{p.name} (pid {p.pid})" for p in report.left_behind)
        out.append(f"processes left behind: {left}")
    else:
        out.append("processes left behind: none")
    out += [f"note: {n}" for n in report.notes]
    out.append(f"hypothesis {'HELD' if report.held else 'DID NOT HOLD'}")
    return "\n".join(out) + "\n"


def to_json(report: Report) -> bytes:
    """The report as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"
