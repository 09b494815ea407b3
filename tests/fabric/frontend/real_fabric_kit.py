"""A served API with FFE in front of a real FabricController on stand-in hosts, for the events
and metrics tests: everything but the VMs is the real code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import httpx

from actors import Ref, open_system
from fabric.controller import FabricController
from fabric.frontend.ffe import Ffe, Pool
from fabric.frontend.rdfe import serve_api
from fabric.guest.messages import InstanceStatus
from fabric.host.messages import InstanceStatusChanged
from fabric.model.status import RoleStatus
from fabric.settings import Settings
from tests.fabric.controller.controller_standin import World


@dataclass
class RealFabric:
    """The served API, its token, and the stand-in hosts' world."""

    url: str
    state: Path
    token: str
    world: World
    controller: Ref
    http: httpx.AsyncClient

    @property
    def cli_state(self) -> tuple[str, str]:
        """``--state-dir <state>`` for the CLI."""
        return ("--state-dir", str(self.state))

    async def report(self, vm: str, status: RoleStatus, restarts: int = 0) -> None:
        """Make the instance's host report a status, as a host agent does when its role host dies
        (``restarts``: that many more role host starts in the VM's current boot)."""
        host_id = self.world.running()[vm]
        host = self.world.hosts[host_id]
        now = host.status[vm]
        st = InstanceStatus(
            status=status, boot=now.boot, starts=now.starts + restarts, at=anyio.current_time()
        )
        host.status[vm] = st
        await self.controller.tell(InstanceStatusChanged(host_id=host_id, instance_id=vm, status=st))


@asynccontextmanager
async def open_real_fabric(state: Path, **serve_options: object) -> AsyncIterator[RealFabric]:
    """Serve the API on 127.0.0.1 in front of a real controller with stand-in hosts."""
    world = World()
    settings = Settings.fast(max_hosts=2, host_cores=4)
    async with open_system() as system:
        controller = await system.spawn(
            lambda: FabricController(state, settings, pool="local", host_factory=world.factory()),
            name="controller:local",
        )
        ffe = await system.spawn(lambda: Ffe([Pool("local", controller)], state), name="ffe")
        async with anyio.create_task_group() as tg:
            url = await tg.start(partial(serve_api, ffe, state, **serve_options))
            token = (state / "token").read_text().strip()
            async with httpx.AsyncClient(
                base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30
            ) as http:
                yield RealFabric(url, state, token, world, controller, http)
            tg.cancel_scope.cancel()
