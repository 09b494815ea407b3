"""Steps the controller benchmarks share (controller_scale.py, failover.py): the scale package,
its deployment, waiting for it to be listed, and killing a controller and its simulator."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import anyio

from fabric.controller import ask
from fabric.controller.messages import CreateDeployment, ListDeployments


def write_scale_package(package: Path, definition: str, config: str) -> None:
    """The one-role package folder: Work/role.py, service.toml, config.toml."""
    (package / "Work").mkdir(parents=True)
    (package / "Work" / "role.py").write_text("VERSION = 'v1'\n")
    (package / "service.toml").write_text(definition)
    (package / "config.toml").write_text(config)


async def deploy_scale(ctl: Any, cspkg: Path, configuration: str, timeout: float) -> None:
    """Ask the controller to deploy ``cspkg`` as scale/production (answered once accepted)."""
    await ask(
        ctl,
        CreateDeployment(
            service="scale",
            slot="production",
            name="scale-1",
            package_path=str(cspkg),
            configuration=configuration.encode(),
            configuration_name="config.toml",
        ),
        timeout=timeout,
    )


def count_instances(view: Any) -> int:
    """Instances of a DeploymentView (a list answer crosses the link as builtins)."""
    return len(view["instances"] if isinstance(view, dict) else view.instances)


async def wait_listed(ctl: Any, count: int, timeout: float, interval: float) -> None:
    """Until the controller lists one deployment of ``count`` instances."""
    with anyio.fail_after(timeout):
        while True:
            views = await ask(ctl, ListDeployments(), timeout=timeout)
            if len(views) == 1 and count_instances(views[0]) == count:
                return
            await anyio.sleep(interval)


def hard_kill(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def kill_controller(ctl: Any, sim_pid: int) -> None:
    """SIGKILL the controller and its simulator; wait (10 s at most) for the controller's end."""
    hard_kill(ctl.pid)
    hard_kill(sim_pid)
    with anyio.move_on_after(10):
        await ctl.join()
