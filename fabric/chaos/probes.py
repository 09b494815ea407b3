"""The steady-state hypothesis: each probe's value in a phase, and whether it is in tolerance."""

from __future__ import annotations

from typing import Literal

import msgspec

from fabric.chaos.load import LoadStats, Sample, percentile, stats
from fabric.chaos.scenario import Phase, Probe


class ProbeResult(msgspec.Struct, frozen=True, kw_only=True):
    """One probe in one phase. ``judged`` False: measured for the report, not for the verdict."""

    name: str
    type: str
    value: float | None
    tolerance: str
    ok: bool
    judged: bool


class PhaseState(msgspec.Struct, frozen=True, kw_only=True):
    """The steady state in one phase: its load, its Ready instances, its probes."""

    phase: Phase
    seconds: float
    load: LoadStats
    instances: int
    ready: int
    probes: list[ProbeResult]
    held: bool
    status: Literal["measured", "skipped"] = "measured"


def evaluate(
    probes: list[Probe], phase: Phase, seconds: float, samples: list[Sample], ready: int, instances: int
) -> PhaseState:
    """Judge every probe on one phase's measurements: the requests sent in it, and ``ready``
    ReadyRole instances of ``instances`` (during the method: the fewest seen).
    """
    load = stats(samples)
    ok_latencies = [s.latency for s in samples if s.ok]
    results = []
    for probe in probes:
        tolerance = probe.tolerance
        value: float | None
        if probe.type == "http-success-rate":
            value = load.availability
        elif probe.type == "latency":
            value = percentile(ok_latencies, probe.percentile)
        else:
            value = float(ready)
            if tolerance.min is None and tolerance.max is None:
                tolerance = type(tolerance)(min=float(instances))
        judged = phase in probe.judged()
        results.append(
            ProbeResult(
                name=probe.title(),
                type=probe.type,
                value=value,
                tolerance=tolerance.text(),
                ok=tolerance.holds(value),
                judged=judged,
            )
        )
    held = all(r.ok for r in results if r.judged)
    return PhaseState(
        phase=phase, seconds=seconds, load=load, instances=instances, ready=ready, probes=results, held=held
    )


def ready_needed(probes: list[Probe], instances: int) -> int:
    """How many Ready instances recovery waits for: the instances-ready probe's minimum, or all."""
    for probe in probes:
        if probe.type == "instances-ready" and probe.tolerance.min is not None:
            return int(probe.tolerance.min)
    return instances


def skipped(phase: Phase, probes: list[Probe]) -> PhaseState:
    """A phase that did not run (the hypothesis failed before the method)."""
    empty = LoadStats(sent=0, succeeded=0, failed=0, availability=None)
    results = [
        ProbeResult(
            name=p.title(), type=p.type, value=None, tolerance=p.tolerance.text(), ok=False, judged=False
        )
        for p in probes
    ]
    return PhaseState(
        phase=phase,
        seconds=0.0,
        load=empty,
        instances=0,
        ready=0,
        probes=results,
        held=False,
        status="skipped",
    )
