"""End to end, real processes: `fabric exec` runs a command in an instance through the API and
the RemoteAccess plugin agent, as the role's account, in its approot, with its environment;
refused with the reason when remote access is not enabled, the account has expired or the
caller has no token; every session logged in the VM; nothing a session started outlives it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from fabric.client.deployments import deploy_service
from fabric.client.errors import ApiRefused
from tests.fabric.certs.cert_kit import leaf, make_ca, pem_file
from tests.fabric.frontend.test_cli import cli
from tests.integration.e2e_kit import SERVICES, Running, copy_service, running_fabric

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

FUTURE = "2099-12-31T23:59:59.0000000+00:00"
PAST = "2020-01-01T00:00:00.0000000+00:00"


async def deploy(
    fab: Running, tmp_path: Path, name: str, *, enabled: str = "true", expiration: str = FUTURE
) -> None:
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
        async with httpx.AsyncClient(base_url=client.url) as anonymous:
            response = await anonymous.post(path, content=json.dumps({"Command": ["true"]}))
        assert response.status_code == 401
        log = next((fab.state_dir / "vms").rglob("expired.*/**/RemoteAccess/Sessions.log")).read_text()
        assert "refused" in log and "expired" in log
