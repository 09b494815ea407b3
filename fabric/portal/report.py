"""The chaos report of the live fabric, read from its event timeline: availability over time with
each fault on it, and per fault the seconds to detect, to leave rotation and to recover.

An instance is available while ReadyRole (the status the load balancer keeps in rotation).
Detection is the first status change of a hit instance after the fault, leaving rotation its
first status other than ReadyRole, recovery its first ReadyRole after that. A fault that names
no single instance (a whole host) is measured on every instance that changed after it; the
search stops at the next fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fabric.controller.events import Event
from fabric.portal.charts import FaultBar, FaultMark, availability_svg, fault_bars_svg

UP = "ReadyRole"
#: the chart starts this long before the first fault (or at the first event kept)
LEAD_SECONDS = 5.0


@dataclass(frozen=True)
class LiveReport:
    """The two pictures and the numbers behind them."""

    availability: str
    bars: str
    marks: list[FaultMark]
    timings: list[FaultBar]


def live_report(events: Sequence[Event], now: float, service: str | None = None) -> LiveReport:
    """The report over ``events`` (oldest first), up to ``now`` (the fabric's clock)."""
    mine = [e for e in events if service is None or e.service.lower() == service.lower() or not e.service]
    statuses = [e for e in mine if e.kind == "status" and e.instance]
    injected = [e for e in mine if e.kind == "fault" and e.status in ("active", "done") and e.fault_id]
    ended = {e.fault_id: e.t for e in mine if e.kind == "fault" and e.status in ("undone", "failed")}
    start = (injected[0].t - LEAD_SECONDS) if injected else (mine[0].t if mine else now)
    start = max(start, mine[0].t if mine else start)
    points = _availability(statuses, start)
    marks = [
        FaultMark(e.fault_id, f"{e.fault} {e.instance or e.host}", e.t, ended.get(e.fault_id))
        for e in injected
    ]
    timings = [_timing(fault, statuses, injected) for fault in injected]
    return LiveReport(
        availability=availability_svg(points, marks, start, max(now, start + 1.0)),
        bars=fault_bars_svg(timings),
        marks=marks,
        timings=timings,
    )


def _availability(statuses: Sequence[Event], start: float) -> list[tuple[float, float]]:
    current: dict[tuple[str, str], str] = {}
    points: list[tuple[float, float]] = []
    for e in statuses:
        current[(e.deployment, e.instance)] = e.status
        live = [s for s in current.values() if s not in ("StoppedVM", "StoppingVM")]
        value = sum(s == UP for s in live) / len(live) if live else 0.0
        points.append((max(e.t, start), value))
    return points


def _timing(fault: Event, statuses: Sequence[Event], faults: Sequence[Event]) -> FaultBar:
    later = [f.t for f in faults if f.t > fault.t]
    until = min(later) if later else float("inf")
    after = [
        e for e in statuses if fault.t <= e.t < until and (not fault.instance or e.instance == fault.instance)
    ]
    detect = leave = recover = None
    per_instance: dict[str, list[Event]] = {}
    for e in after:
        per_instance.setdefault(e.instance, []).append(e)
    for changes in per_instance.values():
        d = changes[0].t - fault.t
        left = next((e for e in changes if e.status != UP), None)
        back = None if left is None else next((e for e in changes if e.t >= left.t and e.status == UP), None)
        detect = d if detect is None else min(detect, d)
        if left is not None:
            gone = left.t - fault.t
            leave = gone if leave is None else min(leave, gone)
        if back is not None:
            up = back.t - fault.t
            recover = up if recover is None else max(recover, up)
    return FaultBar(fault.fault_id, f"{fault.fault} {fault.instance or fault.host}", detect, leave, recover)
