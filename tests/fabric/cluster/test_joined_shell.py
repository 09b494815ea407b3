"""`fabric shell` in an instance on a joined host, for real: a `fabric serve --listen` and a
`fabric host join` on a loopback alias; the shell's pseudo-terminal runs in the VM on that host
(its folder, its size, Ctrl-C), its output and keys relayed through the controller and the host's
link, and it exits with its status."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from fabric.client.deployments import deploy_service
from fabric.client.shell import ShellSession, open_shell
from tests.fabric.certs.cert_kit import leaf, make_ca, pem_file
from tests.fabric.cluster.joined_kit import cluster
from tests.integration.e2e_kit import SERVICES, copy_service
from tests.netns import loopback_hosts

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


async def screen_until(shell: ShellSession, pattern: bytes, seconds: float = 30) -> re.Match[bytes]:
    """Read the remote screen until ``pattern`` (a regex) shows; its match."""
    shown = b""
    with anyio.fail_after(seconds):
        while (found := re.search(pattern, shown)) is None:
            item = await shell.receive()
            assert item is not None, shown
            if isinstance(item, bytes):
                shown += item
    return found


async def test_a_shell_in_an_instance_on_a_joined_host(tmp_path: Path) -> None:
    made = leaf(make_ca(), "remote.test")
    with loopback_hosts(1, tmp_path / "hosts") as hosts:
        async with cluster(hosts, tmp_path) as c:
            await c.start_controller()
            await c.make_token()
            c.join(hosts[0], fault_domain=0)
            await c.wait_hosts({"h1"})
            async with c.client() as client:
                await client.create_hosted_service("remote")
                await client.add_certificate("remote", pem_file(made), certificate_format="pem")
                replace = {"ENABLED": "true", "EXPIRATION": "2099-12-31T23:59:59.0000000+00:00"}
                service = copy_service(
                    SERVICES / "remote", tmp_path, replace={**replace, "THUMBPRINT": made.thumbprint}
                )
                await deploy_service(client, service, None, service="remote")
            await c.all_ready(count=1)
            async with (
                c.client() as client,
                open_shell(client, "remote", "production", "Shell_IN_0", rows=30, cols=90) as shell,
            ):
                # Typed text is echoed: each check looks for what only the command's output holds.
                await shell.send_keys(b'stty size; echo "at=$(pwd)="\n')
                await screen_until(shell, rb"30 90")
                cwd = (await screen_until(shell, rb"at=(/[^=\r\n]*)=")).group(1).decode()
                assert cwd.startswith(str(hosts[0].state_dir / "host" / "vms")), cwd
                await shell.send_keys(b"sleep 300; echo $((40+2))\n")
                await anyio.sleep(0.5)  # the sleep has started (nothing to wait on from here)
                await shell.send_keys(b"\x03")  # Ctrl-C: the sleep ends, the shell goes on
                await shell.send_keys(b"echo $((6*7+1))\n")
                await screen_until(shell, rb"43")
                await shell.send_keys(b"exit 7\n")
                _, status = await shell.output_until_exit()
            assert status == 7
