"""End to end, real processes: `fabric exec` runs a command in an instance through the API and
the RemoteAccess plugin agent, as the role's account, in its approot, with its environment;
refused with the reason when remote access is not enabled, the account has expired or the
caller has no token; every session logged in the VM; nothing a session started outlives it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import struct
import termios
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from fabric.client import AsyncFabricClient
from fabric.client.deployments import deploy_service
from fabric.client.errors import ApiRefused
from fabric.client.shell import ShellRefused, open_shell
from fabric.guest.plugin_agents.remote_exec import MAX_SESSIONS
from tests.fabric.certs.cert_kit import leaf, make_ca, pem_file
from tests.fabric.cluster.joined_kit import screen_until, until_foreground
from tests.fabric.frontend.test_cli import FABRIC, cli
from tests.integration.e2e_kit import SERVICES, Running, copy_service, running_fabric

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

FUTURE = "2099-12-31T23:59:59.0000000+00:00"
PAST = "2020-01-01T00:00:00.0000000+00:00"


async def deploy(
    fab: Running, tmp_path: Path, name: str, *, enabled: str = "true", expiration: str = FUTURE
) -> Path:
    """Deploy the remote service as hosted service ``name``, its PasswordEncryption certificate uploaded."""
    made = leaf(make_ca(), "remote.test")
    async with fab.client() as client:
        await client.create_hosted_service(name)
        await client.add_certificate(name, pem_file(made), certificate_format="pem")
    replace = {"ENABLED": enabled, "EXPIRATION": expiration, "THUMBPRINT": made.thumbprint}
    async with fab.client() as client:
        folder = copy_service(SERVICES / "remote", tmp_path, replace=replace)
        await deploy_service(client, folder, None, service=name)
    await fab.all_ready(name, 1)
    return folder


async def test_exec_runs_as_the_roles_account_and_leaves_nothing_behind(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        await deploy(fab, tmp_path, "remote")
        s = ("--state-dir", str(fab.state_dir))
        code, out, err = await cli(
            "exec",
            "Shell_IN_0",
            *s,
            "--",
            "sh",
            "-c",
            'id -u; pwd; echo "$RoleInstanceID"; echo oops >&2; exit 3',
        )
        assert code == 3, err
        uid, cwd, instance = out.split()
        (view,) = [i for i in await fab.instances("remote")]
        assert int(uid) == (view.uid or os.geteuid())
        assert cwd.endswith("/E/approot") and instance == "Shell_IN_0"
        assert err == "oops\n"

        # A background child of the session is gone once the session ends.
        code, out, err = await cli(
            "exec", "Shell_IN_0", *s, "--", "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"
        )
        assert code == 0, err
        straggler = int(out)
        with anyio.fail_after(10):
            while psutil.pid_exists(straggler) and psutil.Process(straggler).status() != psutil.STATUS_ZOMBIE:
                await anyio.sleep(0.05)

        sessions = next((fab.state_dir / "vms").rglob("RemoteAccess/Sessions.log")).read_text().splitlines()
        assert len(sessions) == 2
        assert "user=ops" in sessions[0] and "command=sh -c" in sessions[0] and "exit status 3" in sessions[0]


async def test_exec_is_refused_with_the_reason(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        await deploy(fab, tmp_path, "disabled", enabled="false")
        await deploy(fab, tmp_path, "expired", expiration=PAST)
        async with fab.client() as client:
            with pytest.raises(ApiRefused, match="remote access is not enabled for this role") as refused:
                await client.exec("disabled", "production", "Shell_IN_0", ["true"])
            assert refused.value.status == 409
            with pytest.raises(
                ApiRefused, match="the remote access account ops expired on 2020-01-01"
            ) as refused:
                await client.exec("expired", "production", "Shell_IN_0", ["true"])
            assert refused.value.status == 403
            path = (
                f"{await client._services()}/expired/deploymentslots/production/roleinstances/Shell_IN_0/exec"
            )
            with pytest.raises(ShellRefused, match="remote access is not enabled for this role") as shut:
                async with open_shell(client, "disabled", "production", "Shell_IN_0"):
                    pass
            assert shut.value.status == 409
            # The shell's WebSocket presents the token in the state folder: a wrong one is refused.
            token = (fab.state_dir / "token").read_text()
            (fab.state_dir / "token").write_text("not-the-token\n")
            try:
                with pytest.raises(ShellRefused, match="HTTP 403"):
                    async with open_shell(client, "expired", "production", "Shell_IN_0"):
                        pass
            finally:
                (fab.state_dir / "token").write_text(token)
        async with httpx.AsyncClient(base_url=client.url) as anonymous:
            response = await anonymous.post(path, content=json.dumps({"Command": ["true"]}))
        assert response.status_code == 401
        log = next((fab.state_dir / "vms").rglob("expired.*/**/RemoteAccess/Sessions.log")).read_text()
        assert "refused" in log and "expired" in log


async def test_a_shell_on_a_pseudo_terminal_resizes_takes_ctrl_c_and_exits_with_its_status(
    tmp_path: Path,
) -> None:
    async with running_fabric(tmp_path) as fab:
        await deploy(fab, tmp_path, "remote")
        async with (
            fab.client() as client,
            open_shell(client, "remote", "production", "Shell_IN_0", rows=30, cols=90) as shell,
        ):
            # Typed text is echoed: each check looks for what only the command's output holds.
            await shell.send_keys(b"stty size; echo uid=$(id -u)\n")
            await screen_until(shell, rb"30 90")
            uid = int((await screen_until(shell, rb"uid=(\d+)")).group(1))
            await shell.resize(40, 100)
            await shell.send_keys(b"stty size\n")
            await screen_until(shell, rb"40 100")
            await shell.send_keys(b"sleep 300; echo $((40+2))\n")
            await until_foreground(["sleep", "300"])
            started = anyio.current_time()
            await shell.send_keys(b"\x03")  # Ctrl-C: the sleep ends, the shell goes on
            await shell.send_keys(b"echo $((6*7+1))\n")
            await screen_until(shell, rb"43")
            assert anyio.current_time() - started < 20
            await shell.send_keys(b"sleep 301 >/dev/null 2>&1 & echo pid=$!\n")
            straggler = int((await screen_until(shell, rb"pid=(\d+)")).group(1))
            await shell.send_keys(b"exit 7\n")
            _, status = await shell.output_until_exit()
        assert status == 7
        (view,) = await fab.instances("remote")
        assert uid == (view.uid or os.geteuid())
        with anyio.fail_after(10):
            while psutil.pid_exists(straggler) and psutil.Process(straggler).status() != psutil.STATUS_ZOMBIE:
                await anyio.sleep(0.05)
        log = next((fab.state_dir / "vms").rglob("RemoteAccess/Sessions.log"))
        # Written once the exit status is sent: wait for it.
        await fab.wait_until(lambda: "shell who=api websocket user=ops: exit status 7" in log.read_text(), 10)


async def test_fabric_shell_carries_a_local_terminal(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        await deploy(fab, tmp_path, "remote")
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 77, 0, 0))
        command = [str(FABRIC), "shell", "Shell_IN_0", "--state-dir", str(fab.state_dir)]
        process = await anyio.open_process(
            command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        os.set_blocking(master, False)
        shown = b""

        async def until(pattern: bytes) -> None:
            nonlocal shown
            with anyio.fail_after(20, reason=f"{pattern!r} not in {shown!r}"):
                while re.search(pattern, shown) is None:
                    await anyio.wait_readable(master)
                    try:
                        shown += os.read(master, 4096)
                    except BlockingIOError:
                        continue
                    except OSError:  # EIO: fabric shell has ended, its terminal is closed
                        raise AssertionError(
                            f"fabric shell ended ({process.returncode}) showing {shown!r}"
                        ) from None

        try:
            if True:
                os.write(master, b"stty size\n")
                await until(rb"33 77")
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
                process.send_signal(signal.SIGWINCH)  # what the terminal tells its foreground process
                # The new size is relayed on its own: the remote shell waits until it has it.
                os.write(master, b'while [ "$(stty size)" = "33 77" ]; do sleep 0.1; done; stty size\n')
                await until(rb"50 120")
                os.write(master, b"sleep 300\n")
                await until_foreground(["sleep", "300"])
                os.write(master, b"\x03")  # Ctrl-C, raw: it interrupts the remote sleep, not fabric
                os.write(master, b"echo $((6*7+1))\n")
                await until(rb"43")
                os.write(master, b"exit 5\n")
                with anyio.fail_after(20):
                    assert await process.wait() == 5
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.aclose()
            os.close(master)


async def test_remote_access_turned_off_by_a_configuration_change_is_refused_at_once(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        folder = await deploy(fab, tmp_path, "remote")
        async with fab.client() as client:
            assert (await client.exec("remote", "production", "Shell_IN_0", ["true"])).exit_status == 0
        cscfg = (folder / "ServiceConfiguration.Local.cscfg").read_text()
        off = cscfg.replace('RemoteAccess.Enabled" value="true"', 'RemoteAccess.Enabled" value="false"')
        assert off != cscfg
        await fab.call(
            lambda c: c.change_configuration(
                "remote", "production", off.encode(), "ServiceConfiguration.Local.cscfg"
            )
        )
        async with fab.client() as client:
            with pytest.raises(ApiRefused, match="remote access is not enabled for this role"):
                await client.exec("remote", "production", "Shell_IN_0", ["true"])
        assert [i.restarts for i in await fab.instances("remote")] == [0]


async def test_an_instance_takes_a_bounded_number_of_sessions_at_once(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        await deploy(fab, tmp_path, "remote")
        async with fab.client() as client, contextlib.AsyncExitStack() as shells:
            for _ in range(MAX_SESSIONS):
                await shells.enter_async_context(open_shell(client, "remote", "production", "Shell_IN_0"))
            with pytest.raises(ShellRefused, match=f"{MAX_SESSIONS} remote sessions open") as refused:
                async with open_shell(client, "remote", "production", "Shell_IN_0"):
                    pass
            assert refused.value.status == 429
            with pytest.raises(ApiRefused, match="remote sessions open"):
                await client.exec("remote", "production", "Shell_IN_0", ["true"])
        async with fab.client() as client:  # the shells closed: their slots are free again
            await fab.wait_until(lambda: _exec_succeeds(client), 20)


async def _exec_succeeds(client: AsyncFabricClient) -> bool:
    try:
        return (await client.exec("remote", "production", "Shell_IN_0", ["true"])).exit_status == 0
    except ApiRefused:
        return False
