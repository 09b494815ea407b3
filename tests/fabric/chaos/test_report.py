"""The report: per-fault timings from a watch's events, probes, and the JSON and text shapes."""

from __future__ import annotations

import msgspec

from fabric.chaos.load import Sample, percentile, stats
from fabric.chaos.probes import evaluate, skipped
from fabric.chaos.report import FaultOutcome, Report, instance_timing, outcome_timings, render, to_json
from fabric.controller.chaos.messages import FaultRecord, Hit, WatchEvent
from tests.fabric.chaos.chaos_kit import scenario


def ev(t: float, instance: str, status: str, rotation: bool | None = True, host: str = "h1") -> WatchEvent:
    return WatchEvent(t=t, instance=instance, status=status, host=host, rotation=rotation)


def record(fault_id: str, at: float, *instances: str) -> FaultRecord:
    return FaultRecord(
        id=fault_id,
        kind="kill",
        label=f"kill {instances}",
        target="role-host",
        instances=list(instances),
        hits=[Hit(what="process", name="WaIISHost", pid=42)],
        at=at,
        wall="2026-01-01T00:00:00.000+00:00",
        state="done",
    )


def test_a_fault_is_timed_from_detection_to_rotation_and_back() -> None:
    events = [
        ev(0.0, "Web_IN_0", "ReadyRole"),
        ev(10.02, "Web_IN_0", "RestartingRole", rotation=False),
        ev(10.03, "Web_IN_0", "StartingRole", rotation=False),
        ev(10.40, "Web_IN_0", "ReadyRole", rotation=True),
    ]
    t = instance_timing(10.0, "Web_IN_0", events)
    assert (round(t.detect or 0, 3), round(t.leave_rotation or 0, 3), round(t.recover or 0, 3)) == (
        0.02,
        0.02,
        0.4,
    )
    assert t.statuses == ["RestartingRole", "StartingRole", "ReadyRole"]


def test_a_role_without_a_load_balancer_recovers_when_ready_and_a_host_move_is_detected() -> None:
    events = [
        ev(0.0, "Worker_IN_0", "ReadyRole", rotation=None),
        ev(3.0, "Worker_IN_0", "RoleStateUnknown", rotation=None),
        ev(4.0, "Worker_IN_0", "StartingRole", rotation=None, host="h2"),
        ev(6.5, "Worker_IN_0", "ReadyRole", rotation=None, host="h2"),
    ]
    t = instance_timing(1.0, "Worker_IN_0", events)
    assert (t.detect, t.leave_rotation, t.recover) == (2.0, None, 5.5)


def test_effects_are_looked_for_only_until_the_next_fault_on_the_same_instance() -> None:
    events = [
        ev(0.0, "Web_IN_0", "ReadyRole"),
        ev(1.1, "Web_IN_0", "StartingRole", rotation=False),
        ev(2.5, "Web_IN_0", "ReadyRole"),
    ]
    timings = outcome_timings(
        [(1, record("f1", 1.0, "Web_IN_0")), (2, record("f2", 2.0, "Web_IN_0"))], events
    )
    _, detect, leave, recover = timings[1]
    assert detect is not None and leave is not None and recover is None  # not back before f2 struck
    # f2 struck an instance already down: it saw it come back.
    assert timings[2][1:] == (0.5, None, 0.5)


def test_probes_judge_each_phase_and_instances_ready_defaults_to_all() -> None:
    s = scenario(
        """
title = "x"
[[steady_state.probes]]
type = "http-success-rate"
tolerance = { min = 0.99 }
[[steady_state.probes]]
type = "latency"
percentile = 90
tolerance = { max = 0.2 }
[[steady_state.probes]]
type = "instances-ready"
"""
    )
    samples = [
        Sample(t=i, latency=0.01 * i, ok=i != 7, error="" if i != 7 else "reset") for i in range(1, 101)
    ]
    during = evaluate(s.steady_state.probes, "during", 10.0, samples, ready=3, instances=4)
    by_name = {p.name: p for p in during.probes}
    assert by_name["http-success-rate"].value == 0.99 and by_name["http-success-rate"].ok
    assert by_name["latency p90"].value == percentile([s.latency for s in samples if s.ok], 90)
    assert not by_name["latency p90"].ok
    assert not by_name["instances-ready"].judged  # not judged during the method by default
    assert not during.held  # latency failed
    after = evaluate(s.steady_state.probes, "after", 3.0, samples[:10], ready=3, instances=4)
    assert not next(p for p in after.probes if p.type == "instances-ready").ok  # 3 of 4 Ready
    assert stats(samples).errors == {"reset": 1}


def test_report_json_shape_and_text() -> None:
    s = scenario('title = "x"')
    probes = s.steady_state.probes
    samples = [Sample(t=i, latency=0.005, ok=True) for i in range(20)]
    phases = {
        "before": evaluate(probes, "before", 2.0, samples, 4, 4),
        "during": evaluate(probes, "during", 10.0, samples, 3, 4),
        "after": skipped("after", probes),
    }
    outcome = FaultOutcome(
        n=1, label="kill role-host@Web_IN_0", kind="kill", planned_at=0.0, applied_at=0.001, outcome="applied",
        record=record("f1", 5.0, "Web_IN_0"), detect=0.02, leave_rotation=0.02, recover=0.4,
    )  # fmt: skip
    report = Report(
        title="x", scenario="x.toml", seed=7, duration=10.0, started="2026-01-01T00:00:00+00:00",
        status="completed", hypothesis="up", held=True, steady_state=phases, faults=[outcome],
        requests=stats(samples),
    )  # fmt: skip
    data = msgspec.json.decode(to_json(report))
    assert set(data) == {
        "title", "scenario", "seed", "duration", "started", "status", "hypothesis", "held", "steady_state",
        "faults", "requests", "availability", "recovery", "rollbacks", "left_behind", "notes",
    }  # fmt: skip
    assert set(data["steady_state"]) == {"before", "during", "after"}
    assert set(data["steady_state"]["during"]) >= {
        "phase",
        "seconds",
        "load",
        "ready",
        "instances",
        "probes",
        "held",
    }
    assert set(data["requests"]) >= {"sent", "succeeded", "failed", "availability", "p50", "p99", "errors"}
    fault = data["faults"][0]
    assert (fault["detect"], fault["leave_rotation"], fault["recover"]) == (0.02, 0.02, 0.4)
    assert fault["record"]["hits"][0] == {
        "what": "process", "name": "WaIISHost", "pid": 42, "started": 0.0, "instance": "", "host": "", "detail": "",
    }  # fmt: skip
    assert msgspec.json.decode(to_json(report), type=Report) == report
    text = render(report)
    assert "detect 0.020s, leave 0.020s, recover 0.400s" in text
    assert "20 sent, 20 succeeded, 0 failed; availability 100.00%" in text
    assert "processes left behind: none" in text and text.endswith("hypothesis HELD\n")


def test_the_text_says_why_a_fault_has_no_rotation_leave() -> None:
    """ "leave -" read as a leave the watch missed; it says the role has no load-balanced
    endpoint, or that the instance was already out of rotation when the fault struck."""
    events = [
        ev(0.0, "Worker_IN_0", "ReadyRole", rotation=None),
        ev(0.0, "Web_IN_1", "ReadyRole"),
        ev(1.0, "Web_IN_1", "StartingRole", rotation=False),
        ev(1.01, "Worker_IN_0", "RestartingRole", rotation=None),
        ev(1.05, "Worker_IN_0", "ReadyRole", rotation=None),
        ev(1.2, "Web_IN_1", "RestartingRole", rotation=False),
        ev(2.5, "Web_IN_1", "ReadyRole", rotation=True),
    ]
    records = [(1, record("f1", 1.0, "Worker_IN_0")), (2, record("f2", 1.1, "Web_IN_1"))]
    timings = outcome_timings(records, events)
    outcomes = []
    for n, r in records:
        per, detect, leave, recover = timings[n]
        outcomes.append(FaultOutcome(
            n=n, label=f"kill {n}", kind="kill", planned_at=0.0, outcome="applied", record=r,
            instances=per, detect=detect, leave_rotation=leave, recover=recover,
        ))  # fmt: skip
    report = Report(
        title="x", scenario="x.toml", seed=7, duration=2.0, started="2026-01-01T00:00:00+00:00",
        status="completed", hypothesis="up", held=True, steady_state={}, faults=outcomes,
        requests=stats([]),
    )  # fmt: skip
    text = render(report)
    assert "leave n/a (no load-balanced endpoint), recover 0.050s" in text, text
    assert "leave - (already out of rotation), recover 1.400s" in text, text
