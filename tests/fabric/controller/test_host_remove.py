"""`fabric host remove` on the controller's side (stand-in hosts, the autojump clock): only a
joined host is forgotten; an unknown name is 404 and a local host 409, each one line, nothing
changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from fabric.controller import ControllerError, ask
from fabric.controller.host_admin import HostPage, ListHosts, RemoveHost
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    create,
    open_controller,
    settings,
    wait_view,
)
from tests.fabric.controller.controller_standin import World

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("check", [True, False])
async def test_a_local_or_unknown_host_is_not_removed(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.abc.Clock, check: bool
) -> None:
    async with open_controller(state_dir, world, settings(max_hosts=1)) as ref:
        await create(ref, service(), timeout=None)
        placed = {i.host for i in (await wait_view(ref, all_ready)).instances}
        (local,) = placed
        for name, status, text in [
            (local, 409, f"host {local} is a local host of the fabric"),
            ("nosuch", 404, "there is no host 'nosuch'"),
        ]:
            with pytest.raises(ControllerError) as caught:
                await ask(ref, RemoveHost(name=name, check=check))
            assert caught.value.status == status and text in caught.value.message, caught.value.message
            assert "\n" not in caught.value.message
        page: HostPage = await ask(ref, ListHosts())
        assert [h.name for h in page.hosts] == [local]
