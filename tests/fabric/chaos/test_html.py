"""A chaos report as a self-contained HTML page (fabric chaos run --html)."""

from __future__ import annotations

from fabric.chaos.html import report_html
from fabric.chaos.load import LoadStats
from fabric.chaos.report import FaultOutcome, Report


def test_the_page_draws_availability_with_a_mark_per_fault_and_a_bar_each() -> None:
    report = Report(
        title="kill <two>",
        scenario="s.toml",
        seed=7,
        duration=10.0,
        started="2026-12-06T00:00:00+00:00",
        status="completed",
        hypothesis="requests succeed",
        held=True,
        steady_state={},
        faults=[
            FaultOutcome(
                n=1,
                label="kill role-host@Web_IN_0",
                kind="kill",
                planned_at=1.0,
                applied_at=1.02,
                outcome="applied",
                detect=0.01,
                leave_rotation=0.01,
                recover=0.8,
            ),
            FaultOutcome(
                n=2,
                label="kill role-host@Web_IN_1",
                kind="kill",
                planned_at=5.0,
                applied_at=5.01,
                outcome="applied",
                detect=0.02,
                leave_rotation=None,
                recover=0.6,
            ),
            FaultOutcome(n=3, label="never ran", kind="kill", planned_at=9.5, outcome="not run"),
        ],
        requests=LoadStats(sent=10, succeeded=10, failed=0, availability=1.0),
        availability=[(0.0, 1.0), (1.03, 0.75), (1.8, 1.0), (5.03, 0.75), (5.6, 1.0)],
    )
    page = report_html(report)
    assert page.startswith("<!doctype html>") and "kill &lt;two&gt;" in page
    assert page.count('class="fault-mark"') == 2 and page.count('class="fault-bar"') == 2
    assert 'class="availability-line"' in page and page.count("<svg") == 2
    assert "<script" not in page and "src=" not in page and "href=" not in page
