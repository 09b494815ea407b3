"""Which entry point a role host runs: the named module, the sorted search, a program, none."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import psutil
import pytest

from tests.roles.role_parent import FIXTURES, marks, run_host, worker_config
from tests.roles.test_worker_host import assert_role_failed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]


async def test_the_first_module_in_sorted_order_defining_an_entry_point_wins(tmp_path: Path) -> None:
    # a_plain.py would exit if imported; b_imports.py only imports the base class.
    config = worker_config("search", tmp_path)
    async with run_host(config) as host:
        await host.recorder.wait_for("ready")
    assert marks(tmp_path) == ["FirstRole"]


@pytest.mark.parametrize("entry_module", ["d_second.dll", "d_second.py", "d_second"])
async def test_the_module_the_definition_names_wins(tmp_path: Path, entry_module: str) -> None:
    config = worker_config("search", tmp_path, entry_module=entry_module)
    async with run_host(config) as host:
        await host.recorder.wait_for("ready")
    assert marks(tmp_path) == ["SecondRole"]


@pytest.mark.parametrize(
    ("app", "entry_module", "detail"),
    [
        ("no_entry", "", "no RoleEntryPoint subclass in any .py file of {root}"),
        ("search", "missing.dll", "entry module 'missing.dll' names missing.py, which is not in {root}"),
        ("no_entry", "tool.py", "{root}/tool.py defines no RoleEntryPoint subclass"),
    ],
)
async def test_a_worker_without_an_entry_point_fails_naming_the_folder(
    tmp_path: Path, app: str, entry_module: str, detail: str
) -> None:
    config = worker_config(app, tmp_path, entry_module=entry_module)
    async with run_host(config) as host:
        reason = await host.exit_reason()
    assert_role_failed(reason)
    assert host.recorder.phases == ["starting", "failed"]
    assert detail.format(root=FIXTURES / app) in host.recorder.states[-1].detail


async def test_iis_host_runs_the_entry_point_and_writes_its_log(tmp_path: Path) -> None:
    log = tmp_path / "Directory" / "d-test.WebRole" / "WaIISHost.log"
    config = worker_config("web_entry", tmp_path, kind="iis", log_path=str(log))
    async with run_host(config) as host:
        await host.recorder.wait_for("ready")
    assert marks(tmp_path) == ["on_start", "on_stop"]
    text = log.read_text()
    assert "entry point WebRole.WebRole" in text
    assert "WaIISHost INFO ready" in text
    assert "WaIISHost INFO stopping" in text


async def test_a_web_role_without_an_entry_point_gets_the_default_one(tmp_path: Path) -> None:
    config = worker_config("no_entry", tmp_path, kind="iis")
    async with run_host(config) as host:
        await host.recorder.wait_for("ready")
        assert await host.ref.stop() is None
    assert host.recorder.phases == ["starting", "ready", "stopping"]


async def test_a_program_entry_point_is_ready_on_start_and_stopped_with_sigterm(tmp_path: Path) -> None:
    program = f"echo started $PWD > {tmp_path}/events.log; exec sleep 30"
    config = worker_config("no_entry", tmp_path, program=program, on_stop_timeout=3.0)
    async with run_host(config) as host:
        await host.recorder.wait_for("ready")
        with anyio.fail_after(5):
            while not marks(tmp_path):
                await anyio.sleep(0.02)
        assert await host.ref.stop() is None
    assert host.recorder.phases == ["starting", "ready", "stopping"]
    assert marks(tmp_path) == [f"started {FIXTURES / 'no_entry'}"]  # run in the role's folder


@pytest.mark.parametrize(
    ("program", "phase", "detail"),
    [
        ("exit 0", "recycling", "the program exited with code 0"),
        ("exit 3", "failed", "the program exited with code 3"),
    ],
)
async def test_a_program_that_exits_recycles_or_fails_the_role(
    tmp_path: Path, program: str, phase: str, detail: str
) -> None:
    config = worker_config("no_entry", tmp_path, program=program)
    async with run_host(config) as host:
        reason = await host.exit_reason()
    if phase == "failed":
        assert_role_failed(reason)
    else:
        assert reason is None
    assert host.recorder.phases == ["starting", "ready", phase]
    assert host.recorder.states[-1].detail == detail


async def test_a_program_dies_with_its_sigkilled_role_host(tmp_path: Path) -> None:
    config = worker_config("no_entry", tmp_path, program="exec sleep 30")
    async with run_host(config) as host:
        await host.recorder.wait_for("ready")
        pid = host.ref.pid
        assert pid is not None
        with anyio.fail_after(5):
            while not psutil.Process(pid).children():
                await anyio.sleep(0.02)
        program = psutil.Process(pid).children()[0]
        os.kill(pid, signal.SIGKILL)
        await host.exit_reason()
        with anyio.fail_after(5):
            while program.is_running() and program.status() != psutil.STATUS_ZOMBIE:
                await anyio.sleep(0.02)
