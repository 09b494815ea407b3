"""A real stall of the controller's event loop, longer than host_failure_timeout, while real host
agent processes keep heartbeating: no host is declared dead and no instance moves."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from actors import open_system
from fabric.controller import FabricController, ask, wait_operation
from fabric.controller.messages import DeleteDeployment
from fabric.settings import Settings
from tests.fabric.controller.controller_kit import all_ready, create, free_port, view, wait_view
from tests.fabric.controller.test_real_hosts import echo_service, host_pids

pytestmark = pytest.mark.slow

FAILURE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Block:
    """Hold the controller's event loop (a blocking call in a handler) for ``seconds``."""

    seconds: float


class BlockingController(FabricController):
    """A controller with one handler that blocks its loop, as a slow call in a real one did."""

    async def _dispatch(self, message: Any) -> Any:
        if isinstance(message, Block):
            time.sleep(message.seconds)
            return None
        return await super()._dispatch(message)


@pytest.mark.timeout(120)
async def test_a_stalled_controller_blames_no_real_host(tmp_path: Path) -> None:
    folder = echo_service(tmp_path / "echo", free_port())
    settings = Settings.fast(max_hosts=3, host_cores=1, host_failure_timeout=FAILURE_TIMEOUT)
    state = tmp_path / "state"
    async with open_system() as system:
        ref = await system.spawn(lambda: BlockingController(state, settings), name="controller")
        configuration = (folder / "config.toml").read_bytes()
        assert (await create(ref, folder, configuration=configuration)).status == "Succeeded"
        before = await wait_view(ref, all_ready, timeout=60)
        pids = host_pids()
        await ask(ref, Block(2.5 * FAILURE_TIMEOUT), timeout=30)  # hosts heartbeat on meanwhile
        await anyio.sleep(2 * settings.host_heartbeat_interval + FAILURE_TIMEOUT / 2)
        after = await view(ref)
        assert [(i.id, i.host, i.restarts) for i in after.instances] == [
            (i.id, i.host, i.restarts) for i in before.instances
        ]
        assert host_pids() == pids and all(psutil.pid_exists(p) for p in pids)
        done = await ask(ref, DeleteDeployment(service="demo", slot="production"))
        assert (await wait_operation(ref, done.request_id, timeout=60)).status == "Succeeded"
