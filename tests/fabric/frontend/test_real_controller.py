"""The CLI and API in front of the real FabricController (with the controller tests' stand-in hosts).

This proves the contract end to end: commands FFE builds are the ones the controller takes,
its refusals arrive as Service Management errors, and its operations are followed to the end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from actors import open_system
from fabric.controller import FabricController
from fabric.frontend.ffe import Ffe, Pool
from fabric.frontend.rdfe import serve_api
from fabric.settings import Settings
from tests.fabric.controller.controller_standin import World
from tests.fabric.frontend.test_cli import cli


@pytest.fixture
async def real_fabric(tmp_path: Path) -> AsyncIterator[Path]:
    """A served API with FFE in front of a real FabricController (stand-in hosts); yields the state."""
    state = tmp_path / "state"
    world = World()
    settings = Settings.fast(max_hosts=2, host_cores=4)
    async with open_system() as system:
        controller = await system.spawn(
            lambda: FabricController(state, settings, pool="local", host_factory=world.factory()),
            name="controller:local",
        )
        ffe = await system.spawn(lambda: Ffe([Pool("local", controller)], state), name="ffe")
        async with anyio.create_task_group() as tg:
            await tg.start(partial(serve_api, ffe, state))
            yield state
            tg.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_deploy_configure_suspend_delete_through_the_real_controller(
    real_fabric: Path, hello: Path, tmp_path: Path
) -> None:
    s = ("--state-dir", str(real_fabric))
    code, out, err = await cli("deploy", str(hello), *s)
    assert code == 0, err
    assert out.endswith("Running, 2/2 instances ready\n"), out

    [view] = json.loads((await cli("status", "--json", *s))[1])["deployments"]
    assert sorted(i["id"] for i in view["instances"]) == ["Hello_IN_0", "Hello_IN_1"]
    assert all(i["status"] == "ReadyRole" and i["host"] for i in view["instances"])

    bad = tmp_path / "bad.cscfg"
    bad.write_text((hello / "ServiceConfiguration.Local.cscfg").read_text().replace("Greeting", "Unknown"))
    code, _, err = await cli("config", str(bad), *s)
    assert code == 2 and "(InvalidConfiguration)" in err and len(err.splitlines()) == 1

    changed = tmp_path / "changed.cscfg"
    changed.write_text(
        (hello / "ServiceConfiguration.Local.cscfg").read_text().replace('"hello"', '"bonjour"')
    )
    code, out, err = await cli("config", str(changed), *s)
    assert code == 0, err
    code, out, err = await cli("suspend", *s)
    assert code == 0 and ": Suspended," in out, (out, err)
    code, _, err = await cli("reboot", "Nope_IN_0", *s)
    assert code == 2
    code, out, err = await cli("delete", *s)
    assert code == 0, err
    assert json.loads((await cli("status", "--json", *s))[1]) == {"deployments": []}
