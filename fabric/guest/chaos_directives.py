"""Faults chaos plants for the next role start, in ``C/Config/Chaos.json``; each is used once.

``{"startup_task": {"mode": "fail" | "hang"}, "on_start": {"mode": "fail" | "slow", "seconds": N}}``
(fabric.controller.chaos.storage writes it; the bootstrapper takes each part when it reaches that step).
"""

from __future__ import annotations

import json
import os
from typing import Any

from fabric.guest.disk import VmDisk
from fabric.guest.startup import TaskPlan

#: what the planted startup task runs: a failure with a telling exit code, or a hang
_TASK_COMMANDS = {
    "fail": "echo 'chaos: this startup task fails on purpose' >&2; exit 3",
    "hang": "echo 'chaos: this startup task hangs on purpose' >&2; exec sleep 2147483647",
}


def take(disk: VmDisk, part: str) -> dict[str, Any] | None:
    """Remove and return one part of the directives (None when there is none or it is unreadable)."""
    path = disk.chaos_file
    try:
        directives = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None
    found = directives.pop(part, None) if isinstance(directives, dict) else None
    if directives:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(directives))
        os.replace(tmp, path)
    else:
        path.unlink(missing_ok=True)
    return found if isinstance(found, dict) else None


def with_startup_fault(disk: VmDisk, plans: list[TaskPlan]) -> tuple[list[TaskPlan], str]:
    """The task plans with a failing or hanging simple task first, when chaos asked for one;
    and a line saying so ("" when not)."""
    fault = take(disk, "startup_task")
    mode = fault.get("mode") if fault else None
    if mode not in _TASK_COMMANDS:
        return plans, ""
    planted = TaskPlan(command_line=_TASK_COMMANDS[mode], task_type="simple", elevated=True, origin="chaos")
    return [
        planted,
        *plans,
    ], f"chaos: the first startup task {'fails' if mode == 'fail' else 'hangs'} on purpose"


def on_start_fault(disk: VmDisk) -> str:
    """The RoleHostConfig.chaos_on_start value for the next role host ("" for none)."""
    fault = take(disk, "on_start")
    if not fault:
        return ""
    if fault.get("mode") == "fail":
        return "fail"
    if fault.get("mode") == "slow":
        return f"slow:{float(fault.get('seconds', 5.0))}"
    return ""
