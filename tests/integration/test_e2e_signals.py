"""A closed terminal (SIGHUP) or a SIGTERM stops `fabric run` and `fabric serve` as Ctrl-C does:
each role's on_stop runs, `fabric run` deletes its deployment, and no process or VM folder is left."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.integration.e2e_kit import SERVICES, copy_service
from tests.integration.test_e2e_cli import FABRIC, Output, all_gone, ready_instances, tree

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def stop_mark_service(tmp_path: Path) -> tuple[Path, Path]:
    """The StopMark service (its on_stop appends to a marker file) and that marker's path."""
    marker = tmp_path / "on_stop.txt"
    return copy_service(SERVICES / "stopmark", tmp_path, replace={"MARKER": str(marker)}), marker


def left_in(state: Path) -> list[str]:
    vms = state / "vms"
    return sorted(p.name for p in vms.iterdir()) if vms.is_dir() else []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
async def test_fabric_run_stops_gracefully_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    service, marker = stop_mark_service(tmp_path)
    state = tmp_path / "state"
    command = [FABRIC, "run", str(service), "--fast", "--state-dir", str(state)]
    async with await anyio.open_process(command, stderr=subprocess.STDOUT) as process:
        out = Output(process)
        # Piped, a line is never wrapped at 80 columns, however long.
        assert (await out.wait_for("state folder ")).endswith(f"state folder {state}")
        await out.wait_for("Stopper_IN_0: ReadyRole")
        below = tree(process.pid)
        process.send_signal(signum)
        await out.wait_for("stopped; no process left behind", 60)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    await all_gone(below)
    assert marker.read_text() == "on_stop Stopper_IN_0\n"
    assert left_in(state) == []


async def test_closing_the_terminal_of_fabric_run_stops_it_gracefully(tmp_path: Path) -> None:
    service, marker = stop_mark_service(tmp_path)
    state = tmp_path / "state"
    master, slave = pty.openpty()
    # `setsid --ctty`: fabric leads a session whose controlling terminal is the pty, as in a
    # terminal window; closing the pty's master is closing that window.
    command = ["setsid", "--ctty", "--wait", FABRIC, "run", str(service), "--fast", "--state-dir", str(state)]
    process = await anyio.open_process(command, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        seen = b""
        with anyio.fail_after(90):
            while b"ReadyRole" not in seen:
                await anyio.wait_readable(master)
                seen = seen[-200:] + os.read(master, 65536)
        below = tree(process.pid)
    finally:
        os.close(master)  # the terminal goes away: the kernel sends SIGHUP
    with anyio.fail_after(90):
        assert await process.wait() == 0
    await all_gone(below)
    assert marker.read_text() == "on_stop Stopper_IN_0\n"
    assert left_in(state) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
async def test_fabric_serve_stops_gracefully_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    service, marker = stop_mark_service(tmp_path)
    state = tmp_path / "state"
    serve = [FABRIC, "serve", "--fast", "--state-dir", str(state)]
    async with await anyio.open_process(serve, stderr=subprocess.STDOUT) as process:
        await Output(process).wait_for("fabric serving")
        deploy = [FABRIC, "deploy", str(service), "--state-dir", str(state)]
        deployed = await anyio.run_process(deploy, check=False)
        assert deployed.returncode == 0, deployed.stderr
        with anyio.fail_after(90):
            while not await ready_instances(state):
                await anyio.sleep(0.2)
        below = tree(process.pid)
        process.send_signal(signum)
        with anyio.fail_after(60):
            assert await process.wait() == 0
    await all_gone(below)
    assert marker.read_text() == "on_stop Stopper_IN_0\n"
