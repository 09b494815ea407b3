"""SVG charts drawn on the server: no script, no library, they open offline and in any browser.

``availability_svg`` draws a step line of availability (0..1) over time with one mark per fault;
``fault_bars_svg`` draws, per fault, a bar from the fault to detection, to leaving rotation, to
recovery. Both take plain numbers, so the portal (from the event timeline) and a chaos run's
report draw the same pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

WIDTH: Final = 760
PAD_LEFT: Final = 48
PAD_RIGHT: Final = 16


@dataclass(frozen=True)
class FaultMark:
    """A fault on the availability chart, at ``t`` seconds."""

    id: str
    label: str
    t: float
    end: float | None = None


@dataclass(frozen=True)
class FaultBar:
    """What one fault did: seconds from the fault to each stage (None: never seen)."""

    id: str
    label: str
    detect: float | None
    leave_rotation: float | None
    recover: float | None


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def availability_svg(
    points: Sequence[tuple[float, float]], marks: Sequence[FaultMark], start: float, end: float
) -> str:
    """A step chart of availability (fraction of instances up, 0..1) from ``start`` to ``end``
    seconds, each point holding until the next, with a vertical mark per fault."""
    height, top, bottom = 220, 14, 30
    span = max(end - start, 1e-6)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = height - top - bottom

    def x(t: float) -> float:
        return PAD_LEFT + (min(max(t, start), end) - start) / span * plot_w

    def y(v: float) -> float:
        return top + (1.0 - min(max(v, 0.0), 1.0)) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart availability" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="availability over time">',
        "<title>Availability over time (fraction of instances Ready); one mark per fault</title>",
        f'<rect x="{PAD_LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f7f7f9" stroke="#ccc"/>',
    ]
    for v in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{PAD_LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{int(v * 100)}%</text>'
        )
    for i in range(5):
        t = start + span * i / 4
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - 10}" font-size="11" text-anchor="middle">{_num(t - start)} s</text>'
        )
    for mark in marks:
        mx = x(mark.t)
        shade = ""
        if mark.end is not None and mark.end > mark.t:
            shade = (
                f'<rect x="{mx:.1f}" y="{top}" width="{max(x(mark.end) - mx, 1):.1f}" height="{plot_h}" '
                'fill="#e4572e" opacity="0.12"/>'
            )
        parts.append(
            f'<g class="fault-mark" data-fault="{escape(mark.id)}"><title>{escape(mark.id)}: {escape(mark.label)} '
            f"at {_num(mark.t - start)} s</title>{shade}"
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#e4572e" stroke-width="2"/>'
            f'<text x="{mx + 3:.1f}" y="{top + 11}" font-size="10" fill="#e4572e">{escape(mark.id)}</text></g>'
        )
    if points:
        ordered = sorted(points)
        path = [f"M{x(ordered[0][0]):.1f},{y(ordered[0][1]):.1f}"]
        for t1, v1 in ordered[1:]:
            path.append(f"H{x(t1):.1f}V{y(v1):.1f}")
        path.append(f"H{x(end):.1f}")
        parts.append(
            f'<path class="availability-line" d="{"".join(path)}" fill="none" stroke="#2e86ab" stroke-width="2"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


_STAGES: Final = (("detect", "#f6ae2d"), ("leave rotation", "#e4572e"), ("recover", "#4caf50"))


def fault_bars_svg(bars: Sequence[FaultBar]) -> str:
    """Per fault, a bar from the fault (0 s) through detection, leaving rotation and recovery."""
    row, top, label_w = 26, 28, 190
    height = top + row * max(len(bars), 1) + 28
    longest = max(
        [b for bar in bars for b in (bar.detect, bar.leave_rotation, bar.recover) if b is not None] or [1.0]
    )
    plot_w = WIDTH - label_w - PAD_RIGHT - 40  # room for the last figure

    def x(seconds: float) -> float:
        return label_w + seconds / longest * plot_w

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart fault-bars" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="per fault: detect, leave rotation, recover">',
        "<title>Per fault: seconds to detect, to leave rotation, to recover</title>",
    ]
    for i, (name, colour) in enumerate(_STAGES):
        lx = label_w + i * 150
        parts.append(
            f'<rect x="{lx}" y="6" width="12" height="12" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="16" font-size="11">{name}</text>'
        )
    if not bars:
        parts.append(f'<text x="{label_w}" y="{top + 16}" font-size="12">no fault yet</text>')
    for i, bar in enumerate(bars):
        y = top + i * row
        parts.append(f'<g class="fault-bar" data-fault="{escape(bar.id)}">')
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" font-size="11" text-anchor="end">'
            f"{escape(bar.id)} {escape(bar.label[:28])}</text>"
        )
        previous = 0.0
        for (name, colour), value in zip(_STAGES, (bar.detect, bar.leave_rotation, bar.recover), strict=True):
            if value is None:
                continue
            width = max(x(value) - x(previous), 1.5)
            parts.append(
                f'<rect x="{x(previous):.1f}" y="{y + 3}" width="{width:.1f}" height="16" fill="{colour}">'
                f"<title>{name}: {value:.3f} s</title></rect>"
            )
            previous = max(previous, value)
        if bar.recover is not None:
            parts.append(
                f'<text x="{x(previous) + 4:.1f}" y="{y + 15}" font-size="10">{bar.recover:.2f} s</text>'
            )
        elif bar.detect is None:
            parts.append(f'<text x="{label_w + 4}" y="{y + 15}" font-size="10">no effect seen</text>')
        parts.append("</g>")
    parts.append(
        f'<text x="{label_w}" y="{height - 8}" font-size="11">0 s</text>'
        f'<text x="{x(longest):.1f}" y="{height - 8}" font-size="11" text-anchor="end">{_num(longest)} s</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
