"""A joined host's name cannot be bought again with a bootstrap token while that host holds it,
and `fabric host remove NAME` revokes its certificate: its link is cut and refused at every hello
from then on, and the name may join again. Real `fabric serve --listen` and `fabric host join`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.integration.test_e2e_cli import Output
from tests.integration.test_e2e_join import (
    CONTROLLER,
    FABRIC,
    fabric,
    free_port_pair,
    joined_hosts,
    linked,
    refused,
    running,
    stop,
    wait_connected,
)
from tests.paths import EXAMPLES

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

#: as root with nft, a joined host isolates its VMs in a table of its own (fabric.network.isolation)
ISOLATING = os.geteuid() == 0 and shutil.which("nft") is not None


def isolation_table(pid: int) -> bool:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return f"table inet reddog_fw_{pid}" in out.splitlines()


async def test_a_held_name_is_refused_and_a_removed_host_is_cut_off(tmp_path: Path) -> None:
    state = tmp_path / "controller"
    port = free_port_pair(CONTROLLER)
    address = f"{CONTROLLER}:{port}"
    settings = tmp_path / "settings.toml"
    settings.write_text("max_hosts = 0\n")  # instances go to joined hosts only
    serve = [FABRIC, "serve", "--fast", "--settings", str(settings), "--listen", address]
    serve += ["--state-dir", str(state)]
    async with running(serve) as controller:
        await Output(controller).wait_for("fabric serving")
        made = await fabric("token", "create", "--ttl", "10m", "--state-dir", str(state))
        token, ca_hash = made.stdout.decode().strip(), made.stderr.decode().split()[-1]
        first = [address, "--token", token, "--ca-hash", ca_hash, "--name", "h1", "--cores", "1"]
        async with running([FABRIC, "host", "join", *first, "--state-dir", str(tmp_path / "a")]) as host:
            await linked(host)
            await wait_connected(state, "h1", host.pid)
            assert not ISOLATING or isolation_table(host.pid)

            # The token cannot buy h1's name for another machine while h1 holds it.
            second = [*first[:-4], "--name", "h1", "--cores", "1", "--state-dir", str(tmp_path / "b")]
            await refused(second, "fabric host remove h1")
            assert not (tmp_path / "b" / "identity.pem").exists()

            # Not while an instance is placed there.
            deployed = await fabric("deploy", str(EXAMPLES / "hello-worker"), "--state-dir", str(state))
            assert deployed.returncode == 0, deployed.stderr
            busy = await fabric("host", "remove", "h1", "--state-dir", str(state))
            err = busy.stderr.decode().strip()
            assert busy.returncode == 2 and len(err.splitlines()) == 1, err
            assert "1 instance(s) placed on it; move them first with `fabric host drain h1`" in err
            deleted = await fabric("delete", "--state-dir", str(state))
            assert deleted.returncode == 0, deleted.stderr

            removed = await fabric("host", "remove", "h1", "--state-dir", str(state))
            assert removed.returncode == 0, removed.stderr
            assert b"revoked" in removed.stdout
            # Its link is cut and refused at its hello from now on: not connected again.
            output = Output(host)
            await output.wait_for("was revoked", 30)
            with anyio.fail_after(30):
                while "h1" in await joined_hosts(state):
                    await anyio.sleep(0.2)
            await stop(host)
        assert not ISOLATING or not isolation_table(host.pid)  # deleted as it stopped
        # The name is free: another machine joins under it with a token.
        async with running([FABRIC, "host", "join", *second]) as other:
            await linked(other)
            await wait_connected(state, "h1", other.pid)
            await stop(other)
        gone = await fabric("host", "remove", "nosuch", "--state-dir", str(state))
        assert gone.returncode == 2 and b"no joined host 'nosuch'" in gone.stderr, gone.stderr
        await stop(controller)
