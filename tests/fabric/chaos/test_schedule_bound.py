"""A scenario's whole schedule is bounded, not only each method line's: a 64 KiB scenario of a
thousand lines each just under the per-line bound planned millions of faults (gigabytes, and
minutes of the event loop of the fabric running it from the portal) before this was refused."""

from __future__ import annotations

import pytest

from fabric.chaos.scenario import ScenarioError, parse_scenario
from fabric.chaos.schedule import MAX_FAULTS, MAX_PER_LINE, Topology, plan

LINE = '[[method]]\nfault = "kill"\ntarget = "host"\nat = [{times}]\n'


def scenario(lines: int, per_line: int) -> str:
    times = ", ".join(str(t / 1000) for t in range(per_line))
    return 'title = "many"\nduration = 20\n[service]\nname = "s"\n' + LINE.format(times=times) * lines


@pytest.mark.timeout(30)
def test_a_schedule_past_its_bound_is_refused_before_it_is_built_whole() -> None:
    many = parse_scenario(scenario(3, MAX_FAULTS // 2))
    with pytest.raises(ScenarioError, match=f"plans more than {MAX_FAULTS} faults in all"):
        plan(many, 1, Topology.of({"Web": 2}))
    # the per-line bound alone let it through
    assert MAX_FAULTS <= MAX_PER_LINE
    assert len(plan(parse_scenario(scenario(2, MAX_FAULTS // 2)), 1, Topology.of({"Web": 2}))) == MAX_FAULTS
