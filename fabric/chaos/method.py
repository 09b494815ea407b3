"""The method of a run: each planned fault injected at its time, then every lasting fault of the
run undone and the scenario's rollbacks run (callers do this in a shielded ``finally``)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import msgspec

from fabric.chaos.report import FaultOutcome, Timings
from fabric.chaos.scenario import Scenario
from fabric.chaos.schedule import PlannedFault
from fabric.client import AsyncFabricClient, ClientError
from fabric.controller.chaos.messages import FaultRecord, Slot


async def inject_all(
    client: AsyncFabricClient,
    schedule: list[PlannedFault],
    m0: float,
    length: float,
    progress: Callable[[str], None],
    outcomes: list[FaultOutcome],
    records: list[tuple[int, FaultRecord]],
    ours: Callable[[FaultRecord], FaultRecord] = lambda record: record,
) -> None:
    """Inject each planned fault at ``m0`` plus its time (appending to ``outcomes`` and
    ``records``, each record through ``ours``: on the run's fabric clock); then wait out the
    method's ``length``."""
    for planned in schedule:
        if planned.at >= length:
            break
        await anyio.sleep(max(0.0, m0 + planned.at - anyio.current_time()))
        sent = anyio.current_time() - m0
        kind = str(type(planned.inject.fault).__struct_config__.tag)
        try:
            record = ours(await client.inject(planned.inject))
        except ClientError as exc:
            outcomes.append(FaultOutcome(
                n=planned.n, label=planned.inject.label, kind=kind, planned_at=planned.at, applied_at=sent,
                outcome="refused", error=str(exc),
            ))  # fmt: skip
            progress(f"t={planned.at:6.2f} {planned.inject.label}: refused: {exc}")
            continue
        records.append((planned.n, record))
        outcomes.append(FaultOutcome(
            n=planned.n, label=planned.inject.label, kind=kind, planned_at=planned.at, applied_at=sent,
            outcome="applied", record=record,
        ))  # fmt: skip
        progress(f"t={planned.at:6.2f} {planned.inject.label}: {record.detail}")
    await anyio.sleep(max(0.0, m0 + length - anyio.current_time()))


async def roll_back(
    client: AsyncFabricClient,
    scenario: Scenario,
    records: list[tuple[int, FaultRecord]],
    service: str | None,
    slot: Slot,
) -> list[str]:
    """Undo every lasting fault of this run still in force, then the scenario's rollbacks."""
    done: list[str] = []
    for _, record in records:
        if record.state != "active":
            continue
        try:
            for undone in await client.undo(record.id):
                if undone.undone_at is not None and undone.state in ("undone", "failed"):
                    done.append(
                        f"{undone.id} {undone.label}: {undone.detail.partition('; undone: ')[2] or undone.detail}"
                    )
        except ClientError as exc:
            done.append(f"{record.id} {record.label}: could not undo: {exc}")
    for action in scenario.rollbacks:
        try:
            if action.action == "undo":
                done.append(f"undo: {len(await client.undo())} fault(s) undone")
            elif action.action == "reboot" and action.instance and service:
                await client.instance_action(service, slot, action.instance, "reboot")
                done.append(f"reboot {action.instance}: accepted")
        except ClientError as exc:
            done.append(f"{action.action}: failed: {exc}")
    return done


def not_run(planned: PlannedFault) -> FaultOutcome:
    kind = str(type(planned.inject.fault).__struct_config__.tag)
    return FaultOutcome(
        n=planned.n, label=planned.inject.label, kind=kind, planned_at=planned.at, outcome="not run"
    )


def timed(outcome: FaultOutcome, timings: dict[int, Timings]) -> FaultOutcome:
    found = timings.get(outcome.n)
    if found is None:
        return outcome
    per_instance, detect, leave, recover = found
    return msgspec.structs.replace(
        outcome, instances=per_instance, detect=detect, leave_rotation=leave, recover=recover
    )
