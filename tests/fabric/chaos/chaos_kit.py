"""Chaos test kit: the guestbook on a fabric in this process, and scenarios written on the fly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from fabric.chaos.scenario import Scenario, parse_scenario
from fabric.client import AsyncFabricClient
from fabric.client.deployments import delete_and_wait, deploy_service
from fabric.controller.chaos.messages import TargetMap
from fabric.server import Fabric, open_fabric
from fabric.settings import Settings
from tests.paths import ROOT

GUESTBOOK = ROOT / "examples" / "guestbook"
EXAMPLES = ROOT / "examples" / "chaos"


@dataclass
class Guestbook:
    """The guestbook deployed on a fabric running in this process."""

    fabric: Fabric
    target: tuple[str, str]

    @property
    def state_dir(self) -> Path:
        return self.fabric.state_dir

    def client(self) -> AsyncFabricClient:
        return AsyncFabricClient(self.state_dir)

    async def targets(self) -> TargetMap:
        async with self.client() as client:
            return await client.targets()

    async def until(self, check: Callable[[TargetMap], bool], timeout: float = 60.0) -> TargetMap:
        """Poll the target map until ``check`` holds (TimeoutError after ``timeout``)."""
        with anyio.fail_after(timeout):
            while True:
                found = await self.targets()
                if check(found):
                    return found
                await anyio.sleep(0.1)


def all_ready(targets: TargetMap) -> bool:
    """Every instance ReadyRole."""
    return bool(targets.instances) and all(i.status == "ReadyRole" for i in targets.instances)


@asynccontextmanager
async def guestbook(state_dir: Path, settings: Settings | None = None) -> AsyncIterator[Guestbook]:
    """Run a fabric, deploy the guestbook, wait until it is Ready; delete it on the way out."""
    async with (
        open_fabric(state_dir, settings or Settings.fast()) as fabric,
        AsyncFabricClient(fabric.state_dir) as client,
    ):
        started = await deploy_service(client, GUESTBOOK, None, replace=True)
        book = Guestbook(fabric, (started.service, started.slot))
        try:
            await book.until(all_ready)
            yield book
        finally:
            with anyio.move_on_after(120, shield=True):
                await delete_and_wait(client, started.service, started.slot)


def scenario(text: str) -> Scenario:
    """A scenario from TOML text."""
    return parse_scenario(text, "test.toml")
