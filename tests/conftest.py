"""Suite-wide guarantees: every test leaves no child process behind; a test marked
``pytest.mark.anyio`` runs once on each anyio backend."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator

import anyio
import psutil
import pytest

from actors import command_line

#: The VM account locks (fabric.host.accounts) of this run, in a folder of its own removed at its
#: end, so the suite leaves nothing in /run/reddog. Set before any fabric module reads it, and
#: inherited by every fabric process the tests start.
_ACCOUNTS = tempfile.mkdtemp(prefix="reddog-accounts-")
os.environ.setdefault("REDDOG_ACCOUNTS_DIR", _ACCOUNTS)


# A suite started in the background by a shell without job control (`cmd &` in a script)
# inherits SIGINT ignored, and so would every process it starts: the tests that stop a fabric
# command with Ctrl-C, as a user does, would wait on a process that cannot hear it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's account locks go with it, and the firewall tables of the fabrics it killed."""
    shutil.rmtree(_ACCOUNTS, ignore_errors=True)
    # A fabric deletes its VM isolation table when it stops; one the tests SIGKILLed leaves it
    # until the next fabric starts: the suite leaves no firewall rule behind.
    from fabric.network import isolation

    if isolation.unavailable() is None:
        anyio.run(isolation.sweep)


@pytest.fixture(scope="module", params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The backends a ``pytest.mark.anyio`` test runs on (anyio's pytest plugin runs it)."""
    return str(request.param)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hand the tests marked ``anyio`` to anyio's plugin: pytest-trio's trio_mode marked every
    async test as a trio test (and would run it on trio whatever its anyio_backend says).
    Such a test cannot take async fixtures, which trio_mode would make trio fixtures."""
    for item in items:
        if item.get_closest_marker("anyio") is not None:
            item.own_markers[:] = [mark for mark in item.own_markers if mark.name != "trio"]


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
    psutil.wait_procs(left, timeout=10)  # reaped: a zombie would fail the next tests' checks
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
