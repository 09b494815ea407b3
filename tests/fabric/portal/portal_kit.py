"""The portal test kit: the guestbook on a real fabric in this process, and the browser driver
(tests.fabric.portal.browser) run as a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from fabric.server import Fabric, open_fabric
from fabric.settings import Settings
from tests.paths import ROOT

GUESTBOOK = ROOT / "examples" / "guestbook"
CHROMIUM = Path("/usr/bin/chromium")
FABRIC_CLI = Path(sys.executable).parent / "fabric"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not CHROMIUM.exists():
        return f"no browser: {CHROMIUM} is missing (apt-get install -y chromium; .ci/run does it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "no browser driver: the playwright package is missing (pip install -e '.[test]')"
    return None


needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")


@dataclass
class Portal:
    """A running fabric with the guestbook deployed: the portal is at ``url``."""

    fabric: Fabric
    token: str

    @property
    def url(self) -> str:
        return self.fabric.url


async def fabric_cli(*args: str) -> str:
    """Run the `fabric` command (a child process); its stdout, or AssertionError with stderr."""
    done = await anyio.run_process([str(FABRIC_CLI), *args], check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


@asynccontextmanager
async def guestbook_portal(state_dir: Path) -> AsyncIterator[Portal]:
    """Run a fabric, deploy the guestbook (4 instances) and wait until it runs; delete it after."""
    async with open_fabric(state_dir, Settings.fast()) as fabric:
        state = ("--state-dir", str(fabric.state_dir))
        await fabric_cli("deploy", str(GUESTBOOK), *state)
        try:
            yield Portal(fabric, (fabric.state_dir / "token").read_text().strip())
        finally:
            with anyio.move_on_after(120, shield=True):
                await fabric_cli("delete", *state)


async def run_browser(scenario: str, portal: Portal, out: Path, timeout: float = 240) -> dict[str, Any]:
    """Run one browser scenario in its own process; its JSON result (AssertionError with its
    traceback and where the screenshots are when it failed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with anyio.fail_after(timeout):
        done = await anyio.run_process(
            [
                sys.executable,
                "-m",
                "tests.fabric.portal.browser",
                scenario,
                portal.url,
                portal.token,
                str(out),
            ],
            check=False,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    lines = done.stdout.decode().strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": done.stderr.decode()}
    if done.returncode != 0 or "error" in result:
        raise AssertionError(
            f"browser scenario {scenario} failed:\n{result.get('error')}\n{done.stderr.decode()[-2000:]}"
        )
    return result
