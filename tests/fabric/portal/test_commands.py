"""`fabric serve --metrics-public` prints the portal's address, `fabric portal` opens it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner

from fabric.cli import main
from fabric.frontend.auth import write_api_url
from tests.integration.test_e2e_cli import FABRIC, Output


def test_fabric_portal_opens_the_address_of_the_running_fabric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    write_api_url(tmp_path, "http://127.0.0.1:7443")
    result = CliRunner().invoke(main, ["portal", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0 and result.stdout.startswith("portal http://127.0.0.1:7443/ ")
    assert opened == ["http://127.0.0.1:7443/"]
    result = CliRunner().invoke(main, ["portal", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 2 and result.stderr.startswith("error: no fabric is running")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_serve_prints_the_portal_and_metrics_public_opens_only_metrics(tmp_path: Path) -> None:
    serve = [FABRIC, "serve", "--fast", "--metrics-public", "--state-dir", str(tmp_path / "state")]
    async with await anyio.open_process(serve, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL) as process:
        line = await Output(process).wait_for("portal http://")
        url = line.split()[1].rstrip("/")
        async with httpx.AsyncClient(base_url=url) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 200
            assert (await anonymous.get("/events")).status_code == 401
            assert 'id="signin"' in (await anonymous.get("/")).text
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(60):
            assert await process.wait() == 0
