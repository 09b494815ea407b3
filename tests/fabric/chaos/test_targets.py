"""`fabric chaos targets` with several deployments lists them all, or the one --service names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from fabric.client import AsyncFabricClient
from fabric.client.deployments import delete_and_wait, deploy_service
from fabric.server import open_fabric
from fabric.settings import Settings
from tests.integration.e2e_kit import SERVICES, copy_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def targets(state: Path, *args: str) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "fabric.cli", "chaos", "targets", *args, "--state-dir", str(state)]
    result = await anyio.run_process(command, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_targets_lists_every_deployment_or_the_one_named(tmp_path: Path) -> None:
    service = copy_service(SERVICES / "stopmark", tmp_path, replace={"MARKER": str(tmp_path / "stops")})
    async with (
        open_fabric(tmp_path / "state", Settings.fast()) as fabric,
        AsyncFabricClient(fabric.state_dir) as client,
    ):
        await deploy_service(client, service, None, service="first")
        await deploy_service(client, service, None, service="second", slot="staging")
        try:
            code, out, err = await targets(fabric.state_dir)
            assert code == 0, err
            heads = [line.split(" (pool")[0] for line in out.splitlines() if not line.startswith(" ")]
            assert heads == ["first/production", "second/staging"]
            code, out, err = await targets(fabric.state_dir, "--json")
            assert code == 0 and [json.loads(line)["service"] for line in out.splitlines()] == [
                "first",
                "second",
            ]
            code, out, err = await targets(fabric.state_dir, "--service", "second")
            assert code == 0 and out.startswith("second/staging") and "first" not in out
            code, out, err = await targets(fabric.state_dir, "--service", "third")
            assert (code, out) == (2, "") and err.startswith("error: ") and len(err.splitlines()) == 1
        finally:
            with anyio.move_on_after(60, shield=True):
                await delete_and_wait(client, "first", "production")
                await delete_and_wait(client, "second", "staging")
