"""Every integration test fails on an event-loop stall over STALL_LIMIT seconds in the fabric
controller or a host agent: the stall detector of each process (actors._stall) appends its stalls
to a file this fixture names, and reads after the test."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import STALL_LOG_ENV

#: A stall this long in the controller or a host agent fails the test (hosts are heartbeated
#: every second or so in the fast profile: a longer stall is a fault a user would meet).
STALL_LIMIT = 1.0


def blocks_controller_or_host(stall: dict[str, Any]) -> bool:
    """Whether a recorded stall held the loop of a controller or a host agent."""
    if str(stall.get("process", "")).startswith("host:"):
        return True
    if str(stall.get("actor") or "").startswith(("FabricController", "controller")):
        return True
    # A fabric started as a command (fabric serve, fabric run): its main loop is the controller's.
    return stall.get("process") == "main" and stall.get("pid") != os.getpid()


def read_stalls(path: Path) -> list[dict[str, Any]]:
    """The stalls recorded in ``path`` (none when no process stalled)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def no_stall_in_controller_or_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Record every process's stalls during the test; fail it on a long one of the controller
    or a host agent."""
    record = tmp_path / "stalls.jsonl"
    monkeypatch.setenv(STALL_LOG_ENV, str(record))
    yield record
    long = [s for s in read_stalls(record) if s["seconds"] > STALL_LIMIT and blocks_controller_or_host(s)]
    if long:
        lines = "; ".join(f"{s['seconds']:.1f} s in {s['culprit']} (process {s['process']})" for s in long)
        pytest.fail(f"event loop stalls over {STALL_LIMIT} s in the controller or a host agent: {lines}")
