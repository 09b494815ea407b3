"""``fabric chaos run --service DIR``: start a fabric here, deploy, run the scenario, stop it all,
and check that no process of the run is left behind."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec

from fabric.chaos.report import Leftover, Report
from fabric.chaos.runner import Run, run_on
from fabric.chaos.scenario import settings_of
from fabric.client import AsyncFabricClient
from fabric.client.deployments import delete_and_wait, deploy_service
from fabric.controller.chaos import tree

#: after the fabric stopped, how long its processes may take to be reaped
GONE_WITHIN = 10.0


async def run_embedded(service: Path, config: Path | None, state_dir: Path | None, run: Run) -> Report:
    """Run ``run`` on a fabric of our own serving ``service`` (a folder or .cspkg).

    The fabric keeps its state in ``state_dir`` (default: a temporary folder, removed after).

    Raises:
        FabricBusy: another fabric serves ``state_dir``.
        ScenarioError, ModelError, ClientError: the scenario, service or deployment is wrong.
    """
    from fabric.server import open_fabric, stop_budget

    settings = settings_of(run.scenario)
    scratch = Path(tempfile.mkdtemp(prefix="reddog-chaos-")) if state_dir is None else None
    folder = state_dir or scratch
    assert folder is not None
    try:
        async with open_fabric(folder, settings) as fabric, AsyncFabricClient(fabric.state_dir) as client:
            run.progress(f"fabric {fabric.url}; deploying {service}")
            started = await deploy_service(
                client, service, config, service=run.scenario.service.name,
                slot=run.scenario.service.slot, replace=True,
            )  # fmt: skip
            run.target = (started.service, started.slot)
            try:
                report = await run_on(fabric.state_dir, run)
            finally:
                with anyio.move_on_after(stop_budget(settings) + 10, shield=True):
                    run.progress("deleting the deployment (StoppingRole, on_stop)")
                    await delete_and_wait(client, started.service, started.slot)
        left = await _left_behind(run.seen)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    held = report.held and not left
    return msgspec.structs.replace(report, left_behind=left, held=held)


async def _left_behind(seen: dict[tuple[int, float], str]) -> list[Leftover]:
    """The processes seen during the run still alive once the fabric is gone."""
    alive: list[tuple[int, float]] = []
    with anyio.move_on_after(GONE_WITHIN):
        while True:
            alive = await anyio.to_thread.run_sync(tree.still_alive, list(seen))
            if not alive:
                break
            await anyio.sleep(0.1)
    return [Leftover(pid=pid, name=seen[(pid, started)], started=started) for pid, started in alive]
