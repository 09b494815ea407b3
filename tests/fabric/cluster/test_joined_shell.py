"""`fabric exec` and `fabric shell` in an instance on a joined host, for real: a `fabric serve
--listen` and a `fabric host join` on a loopback alias (one cluster, one deployment for both). The
command runs in the VM's approot on that host, with its exit status, stdout and stderr; the
shell's pseudo-terminal runs in the VM on that host (its folder, its size, Ctrl-C), its output and
keys relayed through the controller and the host's link, and it exits with its status."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from fabric.client.shell import open_shell
from tests.fabric.cluster.joined_kit import (
    FABRIC,
    cluster,
    deploy_remote_shell,
    one_joined_host,
    screen_until,
    until_foreground,
)
from tests.netns import loopback_hosts

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

#: how long the screen may take to show what a step waits for (relayed through the host's link)
WAIT = 30


async def test_exec_and_a_shell_in_an_instance_on_a_joined_host(tmp_path: Path) -> None:
    with loopback_hosts(1, tmp_path / "hosts") as hosts:
        async with cluster(hosts, tmp_path) as c:
            await one_joined_host(c)
            await deploy_remote_shell(c, tmp_path)

            script = 'pwd; echo "$RoleInstanceID"; echo oops >&2; exit 3'
            done = await anyio.run_process(
                [FABRIC, "exec", "Shell_IN_0", "--state-dir", str(c.state), "--", "sh", "-c", script],
                check=False,
            )
            assert done.returncode == 3, done.stderr
            cwd, instance = done.stdout.decode().split()
            assert cwd.startswith(str(hosts[0].state_dir / "host" / "vms")) and cwd.endswith("/E/approot")
            assert instance == "Shell_IN_0" and done.stderr == b"oops\n"

            async with (
                c.client() as client,
                open_shell(client, "remote", "production", "Shell_IN_0", rows=30, cols=90) as shell,
            ):
                # Typed text is echoed: each check looks for what only the command's output holds.
                await shell.send_keys(b'stty size; echo "at=$(pwd)="\n')
                await screen_until(shell, rb"30 90", WAIT)
                cwd = (await screen_until(shell, rb"at=(/[^=\r\n]*)=", WAIT)).group(1).decode()
                assert cwd.startswith(str(hosts[0].state_dir / "host" / "vms")), cwd
                await shell.send_keys(b"sleep 300; echo $((40+2))\n")
                await until_foreground(["sleep", "300"])
                await shell.send_keys(b"\x03")  # Ctrl-C: the sleep ends, the shell goes on
                await shell.send_keys(b"echo $((6*7+1))\n")
                await screen_until(shell, rb"43", WAIT)
                await shell.send_keys(b"exit 7\n")
                _, status = await shell.output_until_exit()
            assert status == 7
