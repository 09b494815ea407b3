"""Scenario steps that break the control plane itself: kill or hang a controller replica, restart
the goal state's database (``fault = "replica-kill" | "replica-hang" | "database-restart"``).

The controller cannot apply these (it would be killing or stopping itself), so the runner does,
from its own process (fabric.chaos.replicas), at their planned times beside the controller's
faults. They are planned from the seed like every fault (each method line its own generator)
and kept in the journal, numbered after the controller's faults.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import anyio
import msgspec

from fabric.chaos.replicas import ReplicaFaultError, database_outage, hang_replica, kill_replica
from fabric.chaos.report import FaultOutcome
from fabric.chaos.scenario import MethodEntry, Scenario
from fabric.chaos.schedule import _times  # the controller faults' times, drawn the same way

ControlKind = Literal["replica-kill", "replica-hang", "database-restart"]
CONTROL_FAULTS: tuple[str, ...] = ("replica-kill", "replica-hang", "database-restart")


class ControlFault(msgspec.Struct, frozen=True, kw_only=True):
    """A fault on the control plane: which replica (leader, follower or a name) or how the
    database is stopped and started, and for how long (a hang, an outage)."""

    kind: ControlKind
    replica: str = "leader"
    duration: float = 0.0
    stop_command: str = ""
    start_command: str = ""


class PlannedControl(msgspec.Struct, frozen=True, kw_only=True):
    """One control-plane fault of the schedule: ``at`` seconds after the method starts."""

    n: int
    at: float
    line: int
    label: str
    fault: ControlFault


def plan_control(
    scenario: Scenario, seed: int, first: int, duration: float | None = None
) -> list[PlannedControl]:
    """The control-plane faults of ``scenario`` for ``seed``, numbered from ``first`` + 1."""
    length = scenario.duration if duration is None else duration
    items: list[tuple[float, int, str, ControlFault]] = []
    for line, entry in enumerate(scenario.method, 1):
        if entry.fault not in CONTROL_FAULTS:
            continue
        rng = random.Random(f"reddog-chaos:{seed}:{line}")
        for at in _times(entry, length, rng, line):
            lasting = entry.duration if entry.duration is not None else max(0.0, length - at)
            fault = _fault(entry, lasting)
            items.append((round(at, 6), line, _label(entry, fault), fault))
    items.sort(key=lambda item: (item[0], item[1]))
    return [
        PlannedControl(n=first + i, at=at, line=line, label=label, fault=fault)
        for i, (at, line, label, fault) in enumerate(items, 1)
    ]


def _fault(entry: MethodEntry, duration: float) -> ControlFault:
    kind: ControlKind = entry.fault  # type: ignore[assignment]
    db = entry.database
    return ControlFault(
        kind=kind,
        replica=entry.replica,
        duration=duration if kind != "replica-kill" else 0.0,
        stop_command=db.stop_command,
        start_command=db.start_command,
    )


def _label(entry: MethodEntry, fault: ControlFault) -> str:
    what = "database" if fault.kind == "database-restart" else f"replica {fault.replica}"
    return f"{entry.name} ({what})" if entry.name else f"{fault.kind} {what}"


async def apply(state_dir: Path, fault: ControlFault) -> str:
    """Apply one fault (a hang or an outage returns once it is over); returns what was done.

    Raises:
        ReplicaFaultError: no such replica, no leader now, or a database command failed.
    """
    if fault.kind == "replica-kill":
        return await kill_replica(state_dir, fault.replica)
    if fault.kind == "replica-hang":
        return await hang_replica(state_dir, fault.replica, fault.duration)
    return await database_outage(fault.stop_command, fault.start_command, fault.duration)


async def apply_all(
    state_dir: Path,
    schedule: list[PlannedControl],
    m0: float,
    length: float,
    progress: Callable[[str], None],
    outcomes: list[FaultOutcome],
) -> None:
    """Apply each planned fault at ``m0`` plus its time, each in a task of its own (a hang lasts
    while the next one comes); returns when the method's ``length`` is over and every fault
    ended (a hang's SIGCONT and a database's start run even when cancelled)."""
    async with anyio.create_task_group() as tg:
        for planned in schedule:
            if planned.at >= length:
                break
            await anyio.sleep(max(0.0, m0 + planned.at - anyio.current_time()))
            tg.start_soon(_one, state_dir, planned, anyio.current_time() - m0, progress, outcomes)
        await anyio.sleep(max(0.0, m0 + length - anyio.current_time()))


async def _one(
    state_dir: Path,
    planned: PlannedControl,
    sent: float,
    progress: Callable[[str], None],
    outcomes: list[FaultOutcome],
) -> None:
    base = FaultOutcome(
        n=planned.n, label=planned.label, kind=planned.fault.kind, planned_at=planned.at, applied_at=sent,
        outcome="applied",
    )  # fmt: skip
    try:
        detail = await apply(state_dir, planned.fault)
    except ReplicaFaultError as exc:
        outcomes.append(msgspec.structs.replace(base, outcome="refused", error=str(exc)))
        progress(f"t={planned.at:6.2f} {planned.label}: refused: {exc}")
        return
    outcomes.append(msgspec.structs.replace(base, detail=detail))
    progress(f"t={planned.at:6.2f} {planned.label}: {detail}")


def not_run(planned: PlannedControl) -> FaultOutcome:
    """The outcome of a fault the method did not reach."""
    return FaultOutcome(
        n=planned.n, label=planned.label, kind=planned.fault.kind, planned_at=planned.at, outcome="not run"
    )
