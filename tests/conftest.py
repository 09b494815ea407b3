"""Suite-wide guarantees: every test leaves no child process behind."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import psutil
import pytest

from actors import command_line


@pytest.fixture(autouse=True)
def no_processes_left_behind() -> Iterator[None]:
    """Fail a test that leaves a child process running (and kill it, so the next test is clean)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    left = []
    deadline_checks = 50
    for _ in range(deadline_checks):
        left = [p for p in me.children(recursive=True) if p.pid not in before and _alive(p)]
        if not left:
            return
        psutil.wait_procs(left, timeout=0.1)
    for proc in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    pytest.fail(f"processes left behind: {[(p.pid, _cmdline(p)) for p in left]}")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(command_line(proc.cmdline()))
    except psutil.Error:
        return "?"
