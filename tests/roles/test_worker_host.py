"""WaWorkerHost as a real child process: the lifecycle of a worker role's entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import psutil
import pytest

from actors import ActorError, ProcessExited, ProcessOptions
from roles.protocol import (
    Change,
    ChangingResult,
    EnvironmentChanged,
    EnvironmentChanging,
    StatusCheck,
    StatusCheckResult,
)
from tests.paths import ROOT
from tests.roles.role_parent import marks, run_host, worker_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]


async def test_worker_reaches_ready_and_recycles_when_run_returns(tmp_path: Path) -> None:
    config = worker_config("worker", tmp_path, settings={"Run": "return"})
    async with run_host(config) as host:
        starting = await host.recorder.wait_for("starting")
        assert starting.pid == host.ref.pid
        reason = await host.exit_reason()
    assert reason is None  # exit 0: a recycle, not a failure
    assert host.recorder.phases == ["starting", "ready", "recycling"]
    assert host.recorder.states[-1].detail == "run returned"
    assert marks(tmp_path) == ["on_start", "run", "stopping", "on_stop", "on_stop done"]


def assert_role_failed(reason: BaseException | None) -> None:
    """The process ended as a failure the bootstrapper will restart (a non-zero exit)."""
    assert isinstance(reason, ActorError | ProcessExited), reason
    if isinstance(reason, ActorError):
        assert reason.type_name.endswith("RoleFailed")


@pytest.mark.parametrize(
    ("on_start", "detail"),
    [
        ("false", "on_start returned False"),
        ("raise", "on_start raised RuntimeError: cannot reach the database"),
    ],
)
async def test_a_failed_on_start_ends_the_process_without_stopping(
    tmp_path: Path, on_start: str, detail: str
) -> None:
    config = worker_config("worker", tmp_path, settings={"OnStart": on_start})
    async with run_host(config) as host:
        reason = await host.exit_reason()
    assert_role_failed(reason)
    assert host.recorder.phases == ["starting", "failed"]
    assert host.recorder.states[-1].detail == detail
    assert marks(tmp_path) == ["on_start"]  # no stopping event, no on_stop


async def test_an_exception_in_run_fails_the_role_without_on_stop(tmp_path: Path) -> None:
    config = worker_config("worker", tmp_path, settings={"Run": "raise"})
    async with run_host(config) as host:
        reason = await host.exit_reason()
    assert_role_failed(reason)
    assert host.recorder.phases == ["starting", "ready", "failed"]
    assert host.recorder.states[-1].detail == "run raised ValueError: bad message in queue"
    assert marks(tmp_path) == ["on_start", "run"]


async def test_request_recycle_stops_the_role_like_run_returning(tmp_path: Path) -> None:
    config = worker_config("worker", tmp_path, settings={"Run": "recycle"})
    async with run_host(config) as host:
        reason = await host.exit_reason()
    assert reason is None
    assert host.recorder.phases == ["starting", "ready", "recycling"]
    assert host.recorder.states[-1].detail == "request_recycle() was called"
    assert marks(tmp_path) == ["on_start", "run", "stopping", "on_stop", "on_stop done"]


async def test_stopped_by_the_bootstrapper_raises_stopping_then_on_stop(tmp_path: Path) -> None:
    log = tmp_path / "host.log"
    config = worker_config("worker", tmp_path)
    async with run_host(config, options=ProcessOptions(log_path=log, stop_timeout=7.0)) as host:
        await host.recorder.wait_for("ready")
        pid = host.ref.pid
        assert await host.ref.stop() is None
    assert host.recorder.phases == ["starting", "ready", "stopping"]
    assert marks(tmp_path) == ["on_start", "run", "stopping", "on_stop", "on_stop done"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    text = log.read_text()
    # The host logs its phases, each line stamped with the date and time.
    ready_lines = [line for line in text.splitlines() if "WaWorkerHost" in line and line.endswith(" ready")]
    assert ready_lines and ready_lines[0][:4].isdigit() and ready_lines[0][4] == "-"


async def test_a_hanging_on_stop_is_cut_at_on_stop_timeout(tmp_path: Path) -> None:
    config = worker_config("worker", tmp_path, settings={"OnStop": "hang"}, on_stop_timeout=0.5)
    async with run_host(config) as host:
        await host.recorder.wait_for("ready")
        started = anyio.current_time()
        assert await host.ref.stop() is None
        took = anyio.current_time() - started
    assert 0.5 <= took < 2.5
    assert marks(tmp_path) == ["on_start", "run", "stopping", "on_stop"]


async def test_an_on_stop_blocking_the_host_is_killed_by_the_stop_ladder(tmp_path: Path) -> None:
    # The bootstrapper gives the stop message on_stop_timeout (plus a little), then SIGTERM.
    config = worker_config("worker", tmp_path, settings={"OnStop": "block"}, on_stop_timeout=0.5)
    options = ProcessOptions(stop_timeout=0.8, term_timeout=0.5)
    async with run_host(config, options=options) as host:
        await host.recorder.wait_for("ready")
        pid = host.ref.pid
        assert pid is not None
        started = anyio.current_time()
        await host.ref.stop()
        took = anyio.current_time() - started
    assert took < 3.0
    assert marks(tmp_path) == ["on_start", "run", "stopping", "on_stop"]  # never "on_stop done"
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(pid).status()


async def test_plain_def_methods_run_in_worker_threads(tmp_path: Path) -> None:
    config = worker_config("sync_worker", tmp_path)
    async with run_host(config) as host:
        reason = await host.exit_reason()
    assert reason is None
    assert host.recorder.phases == ["starting", "ready", "recycling"]
    assert marks(tmp_path) == ["on_start in_thread=True", "run", "stopping", "on_stop"]


async def test_set_busy_is_reported_by_a_status_check_and_cleared_by_the_next(tmp_path: Path) -> None:
    config = worker_config("worker", tmp_path)
    async with run_host(config) as host:
        await host.recorder.wait_for("ready")
        assert await host.ref.ask(StatusCheck()) == StatusCheckResult(busy=False)
        (tmp_path / "busy").touch()
        assert await host.ref.ask(StatusCheck()) == StatusCheckResult(busy=True)
        (tmp_path / "busy").unlink()
        assert await host.ref.ask(StatusCheck()) == StatusCheckResult(busy=False)


async def test_changing_can_be_cancelled_and_changed_sees_the_new_settings(tmp_path: Path) -> None:
    config = worker_config("worker", tmp_path)
    async with run_host(config) as host:
        await host.recorder.wait_for("ready")
        cancel_me = [Change(kind="setting", name="CancelMe")]
        assert await host.ref.ask(EnvironmentChanging(changes=cancel_me)) == ChangingResult(cancel=True)
        greeting = [Change(kind="setting", name="Greeting")]
        assert await host.ref.ask(EnvironmentChanging(changes=greeting)) == ChangingResult(cancel=False)
        settings = {**config.environment.settings, "Greeting": "bonjour"}
        new = config.environment.__class__(
            deployment_id=config.environment.deployment_id,
            current_instance=config.environment.current_instance,
            settings=settings,
        )
        await host.ref.tell(EnvironmentChanged(environment=new, changes=greeting))
        # The tell is handled before the ask after it: the changed handlers have run by then.
        await host.ref.ask(StatusCheck())
    assert marks(tmp_path) == [
        "on_start",
        "run",
        "changing CancelMe",
        "changing Greeting",
        "changed Greeting=bonjour",
        "stopping",
        "on_stop",
        "on_stop done",
    ]


async def test_role_hosts_run_on_asyncio_too(tmp_path: Path) -> None:
    # The host runs on its parent's backend; an abandoned plain run() must not hold its exit.
    code = (
        "import sys, anyio; sys.path.insert(0, sys.argv[1]); from tests.roles import role_parent; "
        "print(anyio.run(role_parent.recycle_sync_worker, sys.argv[2], backend='asyncio'))"
    )
    here = str(ROOT)
    with anyio.fail_after(20):
        result = await anyio.run_process([sys.executable, "-c", code, here, str(tmp_path)])
    assert result.stdout.decode().strip() == "['starting', 'ready', 'recycling']"
    assert marks(tmp_path) == ["on_start in_thread=True", "run", "stopping", "on_stop"]
