"""`fabric serve --https`: the API over TLS with a certificate from the cluster CA, for real
processes; a client trusts that CA alone, pinned as a file in its state folder (the fabric's
own folder has it in cluster/; `fabric trust ADDRESS:PORT --ca-hash` fetches it from the join
port and checks its hash): without it, or with another CA, the CLI refuses in one line (exit 2)
and sends nothing; with it, it works."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from fabric.cluster.ca import ClusterCA
from tests.integration.test_e2e_join import free_port_pair

pytestmark = [pytest.mark.timeout(120)]

FABRIC = str(Path(sys.executable).with_name("fabric"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FABRIC, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


async def test_the_api_over_https_is_trusted_only_with_the_pinned_ca(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = tmp_path / "serve.log"
    listen = f"127.0.0.1:{free_port_pair('127.0.0.1')}"  # the join port (PORT+1) hands out the CA
    with log.open("wb") as out:
        process = subprocess.Popen(
            [FABRIC, "serve", "--https", "--fast", "--listen", listen, "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with anyio.fail_after(60):
            while not (state / "api").exists():
                assert process.poll() is None, log.read_text(errors="replace")
                await anyio.sleep(0.05)
        url = (state / "api").read_text().strip()
        assert url.startswith("https://127.0.0.1:")
        # the fabric's own folder: its cluster CA is there
        done = await anyio.to_thread.run_sync(_cli, "status", "--state-dir", str(state))
        assert done.returncode == 0, done.stderr

        client = tmp_path / "client"  # another machine's client: the URL and the token, no CA
        client.mkdir()
        for name in ("api", "token"):
            shutil.copy(state / name, client / name)
        done = await anyio.to_thread.run_sync(_cli, "status", "--state-dir", str(client))
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0, done.stderr  # one line
        assert f"the fabric at {url} serves HTTPS and no CA is pinned" in done.stderr

        ClusterCA.open(tmp_path / "other")  # the CA of another fabric: its certificate is refused
        shutil.copy(tmp_path / "other" / "ca.pem", client / "ca.pem")
        done = await anyio.to_thread.run_sync(_cli, "status", "--state-dir", str(client))
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0, done.stderr
        assert "showed a certificate the CA pinned" in done.stderr

        (client / "ca.pem").unlink()
        wrong = "sha256:" + "0" * 64
        done = await anyio.to_thread.run_sync(
            _cli, "trust", listen, "--ca-hash", wrong, "--state-dir", str(client)
        )
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0, done.stderr
        assert f"not the pinned {wrong}" in done.stderr
        assert not (client / "ca.pem").exists()
        pin = ClusterCA.open(state / "cluster").hash
        done = await anyio.to_thread.run_sync(
            _cli, "trust", listen, "--ca-hash", pin, "--state-dir", str(client)
        )
        assert done.returncode == 0, done.stderr
        assert (client / "ca.pem").read_bytes() == (state / "cluster" / "ca.pem").read_bytes()
        done = await anyio.to_thread.run_sync(_cli, "status", "--state-dir", str(client))
        assert done.returncode == 0, done.stderr
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                await anyio.to_thread.run_sync(process.wait, 60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
