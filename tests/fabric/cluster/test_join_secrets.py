"""What a joined host's machine shows of its secrets: a command line is readable by every
process there (``/proc/PID/cmdline``, ``ps``), the limited roles of its VMs included, so the
bootstrap token a `fabric host join` was started with is gone from it once the host joined."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from fabric.cluster.ca import ClusterCA
from fabric.cluster.port import cluster_dir
from fabric.cluster.tokens import TokenStore
from fabric.settings import Settings
from tests.fabric.cluster.test_host_settings import Heard, controller
from tests.integration.test_e2e_cli import Output
from tests.integration.test_e2e_join import FABRIC, free_port_pair, running, stop

pytestmark = [pytest.mark.timeout(120)]

HOST = "127.0.0.1"


async def test_a_joined_host_keeps_no_token_on_its_command_line(tmp_path: Path) -> None:
    state, port = tmp_path / "controller", free_port_pair(HOST)
    async with anyio.create_task_group() as tg:
        served = await controller(tg, state, Settings.fast(), port, Heard())
        token, _ = TokenStore(cluster_dir(state)).create(600)
        ca_hash = ClusterCA.open(cluster_dir(state)).hash
        join = [FABRIC, "host", "join", f"{HOST}:{port}", f"--token={token}", "--ca-hash", ca_hash]
        join += ["--cores", "1", "--name", "h1", "--state-dir", str(tmp_path / "h1")]
        async with running(join) as process:
            out = Output(process)
            await out.wait_for("host h1 joined", 60)
            seen = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
            assert not [word for word in seen if token.split(".")[1].encode() in word], seen
            assert b"join" in seen and str(tmp_path / "h1").encode() in seen  # the same host, running on
            await stop(process)
        served.cancel()
