"""The chaos runner as the portal runs it (fabric.portal.scenarios): a scenario's TOML text in,
the report page out."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from fabric.chaos.html import report_html
from fabric.chaos.runner import Run, run_on
from fabric.chaos.scenario import ScenarioError, parse_scenario
from fabric.client import ClientError


async def run_scenario(state_dir: Path, text: str, progress: Callable[[str], None]) -> str:
    """Run the scenario against the fabric of ``state_dir`` with a new seed; its report page.

    Raises:
        ValueError: the scenario is not valid, or the run cannot start (one line).
    """
    try:
        scenario = parse_scenario(text, "portal.toml")
    except ScenarioError as exc:
        raise ValueError(str(exc)) from None
    seed = random.SystemRandom().randrange(1, 2**31)
    run = Run(scenario=scenario, scenario_file="portal.toml", seed=seed, progress=progress)
    progress(f"seed {seed}")
    try:
        report = await run_on(state_dir, run)
    except (ScenarioError, ClientError) as exc:
        raise ValueError(str(exc)) from None
    return report_html(report)
