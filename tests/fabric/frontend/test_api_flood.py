"""The API's connections are bounded: a flood of silent connections to a real `fabric serve`
holds at most a bounded number of its descriptors (one past the bound is closed as soon as it
is accepted, logged once), and the API answers again once they go."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

pytestmark = [pytest.mark.timeout(120)]

FABRIC = str(Path(sys.executable).with_name("fabric"))
#: the fabric's soft RLIMIT_NOFILE here: its API then holds 64 connections (a sixteenth)
NOFILE = 1024
LIMIT = 64
#: past the bound, fewer than the listen backlog (100): each is accepted at once, then closed
FLOOD = 150


def _small_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _wait_for(condition: object, what: str, seconds: float = 60.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.05)


async def test_a_flood_of_connections_to_the_api_is_bounded(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [FABRIC, "serve", "--fast", "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_small_nofile,
            start_new_session=True,
        )
    flood: list[socket.socket] = []
    try:
        await _wait_for(lambda: (state / "api").exists() or process.poll() is not None, "the API")
        url = (state / "api").read_text().strip()
        port = int(url.rsplit(":", 1)[1])
        token = (state / "token").read_text().strip()
        before = _descriptors(process.pid)
        for _ in range(FLOOD):
            flood.append(socket.create_connection(("127.0.0.1", port)))
        refused = re.compile(rf"the API at {re.escape(url)} serves {LIMIT} connections already: closing")
        await _wait_for(lambda: refused.search(log.read_text(errors="replace")), "the refusal")
        # each connection held is one descriptor of fabric serve (before: one for each of them)
        assert _descriptors(process.pid) - before <= LIMIT + 8
        assert log.read_text(errors="replace").count("connections already: closing") == 1  # one line
        for sock in flood:
            sock.close()
        flood.clear()
        # the server lets them go (hypercorn notices a silent one closed at its idle timeout, ~5 s)
        await _wait_for(lambda: _descriptors(process.pid) <= before + 2, "the flood to go")

        def status() -> int:
            headers = {"authorization": f"Bearer {token}"}
            return httpx.get(f"{url}/subscriptions", headers=headers, timeout=30).status_code

        assert await anyio.to_thread.run_sync(status) == 200
    finally:
        for sock in flood:
            sock.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                await anyio.to_thread.run_sync(process.wait, 60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
