"""A run's journal (JSON): the scenario, seed and topology, the fault schedule drawn from them, and
once the run ends its report. ``fabric chaos replay JOURNAL`` runs the same schedule again.

The journal is written before the first fault and again at the end, so an interrupted run
still leaves its schedule behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from fabric.chaos.control import PlannedControl
from fabric.chaos.report import Report
from fabric.chaos.scenario import Scenario, ScenarioError
from fabric.chaos.schedule import PlannedFault, Topology

VERSION = 1


class Journal(msgspec.Struct, frozen=True, kw_only=True):
    """Everything needed to run a scenario's schedule again, and what happened the last time."""

    version: int = VERSION
    scenario_file: str
    scenario: Scenario
    seed: int
    duration: float
    topology: Topology
    schedule: list[PlannedFault]
    #: faults on the control plane, applied by the runner (fabric.chaos.control)
    control: list[PlannedControl] = []
    report: Report | None = None


def write_journal(path: str | os.PathLike[str], journal: Journal) -> None:
    """Write (or replace) the journal atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(journal), indent=2) + b"\n")
    os.replace(tmp, target)


def read_journal(path: str | os.PathLike[str]) -> Journal:
    """Read a journal.

    Raises:
        ScenarioError: missing, not JSON, or not a chaos journal of this version.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the journal: {exc.strerror or exc}") from None
    try:
        journal = msgspec.json.decode(data, type=Journal)
    except msgspec.MsgspecError as exc:
        raise ScenarioError(f"{path}: not a chaos journal: {exc}") from None
    if journal.version != VERSION:
        raise ScenarioError(f"{path}: journal version {journal.version}; this fabric reads version {VERSION}")
    return journal
