"""`fabric hosts` and `fabric host cordon|uncordon|drain` against a real `fabric serve`: the states a
user sees (Ready, Cordoned, NotReady for a host that stopped heartbeating, then Dead), a drain
that moves an instance, refusals in one line with exit 2 and nothing changed, and an uncordoned
host taking instances again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest

from fabric.client import AsyncFabricClient
from fabric.client.errors import BadRequest, NotFound
from tests.integration.test_e2e_cli import FABRIC, all_gone, tree
from tests.paths import EXAMPLES

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


async def fabric(state: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `fabric ARGS --state-dir STATE` (in a thread: a CLI call is short and self-contained)."""
    command = [FABRIC, *args, "--state-dir", str(state)]
    return await anyio.to_thread.run_sync(lambda: subprocess.run(command, capture_output=True, timeout=120))


async def ready_hosts(state: Path) -> list[str]:
    """The host of each ReadyRole instance."""
    result = await fabric(state, "status", "--json")
    view = json.loads(result.stdout) if result.returncode == 0 else {}
    return [
        i["host"] for d in view.get("deployments", []) for i in d["instances"] if i["status"] == "ReadyRole"
    ]


async def hosts(state: Path) -> dict[str, dict[str, Any]]:
    result = await fabric(state, "hosts", "--json")
    assert result.returncode == 0, result.stderr
    return {h["name"]: h for h in map(json.loads, result.stdout.decode().splitlines())}


async def wait_host(folder: Path, name: str, **wanted: object) -> dict[str, Any]:
    with anyio.fail_after(60):
        while True:
            host = (await hosts(folder)).get(name, {})
            if all(host.get(k) == v for k, v in wanted.items()):
                return host
            await anyio.sleep(0.1)


@asynccontextmanager
async def killed_at_the_end(process: anyio.abc.Process) -> AsyncIterator[None]:
    """Run the body; SIGKILL the process if it still runs after (a failed check, say)."""
    try:
        yield
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.move_on_after(30, shield=True):
            await process.wait()
        await process.aclose()


async def refused(state: Path, args: list[str], why: str) -> None:
    result = await fabric(state, *args)
    err = result.stderr.decode().strip()
    assert result.returncode == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and why in err, err


async def test_hosts_cordon_drain_uncordon_and_states(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = tmp_path / "settings.toml"
    # A silent host is NotReady from 1 s (two heartbeat intervals) until declared dead at 8 s.
    settings.write_text("max_hosts = 2\nhost_failure_timeout = 8.0\n")
    serve = [FABRIC, "serve", "--fast", "--settings", str(settings), "--state-dir", str(state)]
    log = tmp_path / "serve.log"
    # Its output goes to a file: a pipe nobody reads would fill and stop the fabric.
    with log.open("wb") as out:
        process = await anyio.open_process(serve, stdout=out, stderr=subprocess.STDOUT)
    async with killed_at_the_end(process):
        with anyio.fail_after(60):
            while "fabric serving" not in log.read_text():
                await anyio.sleep(0.1)
        deployed = await fabric(state, "deploy", str(EXAMPLES / "hello-worker"), "--name", "one")
        assert deployed.returncode == 0, deployed.stderr
        with anyio.fail_after(90):
            while not await ready_hosts(state):
                await anyio.sleep(0.2)
        first = await wait_host(state, "local-host1", state="Ready", instance_count=1)
        assert first["kind"] == "local" and first["address"] == "127.0.0.1" and first["cores_used"] == 1
        assert first["memory_used_mb"] > 0 and first["memory_mb"] >= first["memory_used_mb"]
        assert 0 <= first["heartbeat_age"] < 3.0

        await refused(state, ["host", "cordon", "nosuch"], "there is no host 'nosuch'")
        async with AsyncFabricClient(state) as client:  # the API: 4xx, and bounded pages
            with pytest.raises(NotFound):
                await client.drain("nosuch")
            with pytest.raises(BadRequest, match="limit must be"):
                await client.hosts(limit=501)
            page = await client.hosts(limit=1)
            assert page.total == 1 and page.next_offset is None and page.hosts[0].name == "local-host1"
        await refused(state, ["host", "drain", "nosuch"], "there is no host 'nosuch'")

        # Drain: the instance moves to a second host; the first stays, empty and Cordoned.
        drained = await fabric(state, "host", "drain", "local-host1")
        assert drained.returncode == 0, drained.stderr
        assert "1 instance(s) moved over 1 update domain(s)" in drained.stdout.decode()
        listed = await hosts(state)
        assert listed["local-host1"]["state"] == "Cordoned" and listed["local-host1"]["instance_count"] == 0
        assert listed["local-host2"]["instance_count"] == 1
        assert await ready_hosts(state) == ["local-host2"]

        # Nowhere else to go (max_hosts = 2, the other one cordoned): refused, nothing changed.
        await refused(state, ["host", "drain", "local-host2"], "no other host has room")
        assert (await hosts(state))["local-host2"]["state"] == "Ready"

        uncordoned = await fabric(state, "host", "uncordon", "local-host1")
        assert uncordoned.returncode == 0, uncordoned.stderr
        assert (await hosts(state))["local-host1"]["state"] == "Ready"

        # A host that stops heartbeating: NotReady first, Dead after host_failure_timeout; its
        # instance goes to the uncordoned host.
        os.kill(listed["local-host2"]["pid"], signal.SIGSTOP)
        late = await wait_host(state, "local-host2", state="NotReady")
        assert late["heartbeat_age"] > 1.0
        await wait_host(state, "local-host2", state="Dead")
        await wait_host(state, "local-host1", instance_count=1)
        with anyio.fail_after(60):
            while await ready_hosts(state) != ["local-host1"]:
                await anyio.sleep(0.2)
        table = (await fabric(state, "hosts")).stdout.decode().splitlines()
        assert table[0].split()[:3] == ["NAME", "ADDRESS", "CORES"]
        assert any(line.startswith("local-host2") and " Dead " in line for line in table), table

        below = tree(process.pid)
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(60):
            assert await process.wait() == 0
    await all_gone(below)
