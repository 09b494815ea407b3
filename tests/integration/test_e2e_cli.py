"""End to end through the command line: `fabric run` interrupted, `fabric serve` SIGKILLed and
restarted, and the standalone VM runner. Each checks that no process is left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import psutil
import pytest

from tests.paths import EXAMPLES

pytestmark = pytest.mark.timeout(180)

FABRIC = str(Path(sys.executable).with_name("fabric"))


class Output:
    """Lines a child process printed, read as they come."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = b""

    async def wait_for(self, text: str, seconds: float = 90.0) -> str:
        assert self.process.stdout is not None
        with anyio.fail_after(seconds):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                chunk = await self.process.stdout.receive()
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split(b"\n")
                self.lines += [c.decode(errors="replace") for c in complete]


def tree(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


async def all_gone(processes: list[psutil.Process], seconds: float = 30.0) -> None:
    with anyio.fail_after(seconds):
        while alive := [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
            del alive
            await anyio.sleep(0.05)


async def status_json(state: Path) -> dict[str, object]:
    result = await anyio.run_process([FABRIC, "status", "--json", "--state-dir", str(state)], check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


async def ready_instances(state: Path) -> list[dict[str, object]]:
    view = await status_json(state)
    deployments = view.get("deployments", []) if view else []
    return [i for d in deployments for i in d["instances"] if i["status"] == "ReadyRole"]  # type: ignore[index,union-attr]


async def test_fabric_run_interrupted_stops_gracefully_and_leaves_nothing(tmp_path: Path) -> None:
    command = [
        FABRIC,
        "run",
        str(EXAMPLES / "hello-worker"),
        "--fast",
        "--state-dir",
        str(tmp_path / "state"),
    ]
    async with await anyio.open_process(command, stderr=subprocess.STDOUT) as process:
        out = Output(process)
        await out.wait_for("HelloWorker_IN_0: ReadyRole")
        below = tree(process.pid)
        assert len(below) >= 3  # host, VM, bootstrapper, role host...
        process.send_signal(signal.SIGINT)
        await out.wait_for("stopped; no process left behind", 60)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    await all_gone(below)


async def test_a_sigkilled_fabric_comes_back_with_every_deployment(tmp_path: Path) -> None:
    state = tmp_path / "state"
    serve = [FABRIC, "serve", "--fast", "--state-dir", str(state)]
    async with await anyio.open_process(serve, stderr=subprocess.STDOUT) as first:
        await Output(first).wait_for("fabric serving")
        deployed = await anyio.run_process(
            [
                FABRIC,
                "deploy",
                str(EXAMPLES / "hello-worker"),
                "--name",
                "survivor",
                "--state-dir",
                str(state),
            ],
            check=False,
        )
        assert deployed.returncode == 0, deployed.stderr
        with anyio.fail_after(90):
            while not await ready_instances(state):
                await anyio.sleep(0.2)
        below = tree(first.pid)
        first.kill()  # SIGKILL: no goodbye, no graceful stop
        await first.wait()
    await all_gone(below)  # everything died with it (parent-death signals, EOF on links)

    async with await anyio.open_process(serve, stderr=subprocess.STDOUT) as second:
        await Output(second).wait_for("fabric serving")
        with anyio.fail_after(90):
            while not (ready := await ready_instances(state)):
                await anyio.sleep(0.2)
        view = await status_json(state)
        (deployment,) = view["deployments"]  # type: ignore[misc]
        assert deployment["name"] == "survivor" and ready[0]["id"] == "HelloWorker_IN_0"
        below = tree(second.pid)
        second.send_signal(signal.SIGINT)
        with anyio.fail_after(60):
            assert await second.wait() == 0
    await all_gone(below)


async def test_the_standalone_vm_runner_boots_and_stops_one_vm(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "fabric.guest", str(EXAMPLES / "hello-worker"),
        "--role", "HelloWorker", "--fast", "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    async with await anyio.open_process(command, stderr=subprocess.STDOUT) as process:
        out = Output(process)
        await out.wait_for("HelloWorker_IN_0: ReadyRole")
        below = tree(process.pid)
        process.send_signal(signal.SIGINT)
        await out.wait_for("HelloWorker_IN_0 stopped", 60)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    await all_gone(below)
    logs = tmp_path / "state" / "vms" / "HelloWorker_IN_0" / "C" / "Logs"
    assert "ReadyRole" in (logs / "WaAppAgent.log").read_text()
