"""A chaos run's report as one self-contained HTML file (``fabric chaos run ... --html FILE``):
the text report, availability over time with each fault drawn on it, and per fault a bar of
detect / leave rotation / recover, as SVG drawn here (no script, no link: it opens offline)."""

from __future__ import annotations

from html import escape

from fabric.chaos.report import Report, render
from fabric.portal.charts import FaultBar, FaultMark, availability_svg, fault_bars_svg

_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1d1d1f}
h1{font-size:1.2rem}h2{font-size:1rem;margin-top:1.5rem}.held{color:#2e7d32}.broke{color:#c0392b}
pre{background:#f7f7f9;padding:.8rem;overflow:auto;font-size:.8rem}svg{display:block;max-width:100%;height:auto}"""


def report_html(report: Report) -> str:
    """The whole page."""
    marks, bars = [], []
    for f in report.faults:
        if f.applied_at is None:
            continue
        name = f"#{f.n}"
        marks.append(FaultMark(name, f.label, f.applied_at))
        bars.append(FaultBar(name, f.label, f.detect, f.leave_rotation, f.recover))
    end = max([report.duration, 1.0, *(t for t, _ in report.availability)])
    verdict = "held" if report.held else "did not hold"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(report.title)} · chaos report</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(report.title)}</h1>"
        f'<p class="{"held" if report.held else "broke"}">{escape(report.hypothesis)}: {verdict} '
        f"({escape(report.status)}; seed {report.seed}; started {escape(report.started)})</p>"
        "<h2>Availability over time</h2>"
        + availability_svg(report.availability, marks, 0.0, end)
        + "<h2>Per fault: detect, leave rotation, recover</h2>"
        + fault_bars_svg(bars)
        + f"<h2>Report</h2><pre>{escape(render(report))}</pre></body></html>\n"
    )
