"""The load balancer's passive health check as the controller shows it: an instance that is Ready
but refuses connections is "refusing" in its view and the status table, until it accepts again."""

from __future__ import annotations

from pathlib import Path

import anyio
from rich.console import Console

from fabric.commands.client_view import render_status
from fabric.controller.messages import DeploymentView
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    create,
    echo_servers,
    fetch,
    open_controller,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World


def refusing(v: DeploymentView) -> dict[str, list[str]]:
    return {i.id: i.refusing for i in v.instances if i.refusing}


async def test_a_ready_instance_that_refuses_shows_as_refusing_until_it_accepts(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        v = await wait_view(ref, all_ready)
        port = v.endpoints[0].port
        fronts = {i.id: int(i.endpoints["Http"].split(":")[1]) for i in v.instances if i.role == "Front"}
        async with echo_servers({"Front_IN_0": fronts["Front_IN_0"]}):
            # Front_IN_1 reports Ready but nothing listens on its port: no client notices.
            assert {await fetch(port) for _ in range(4)} == {"Front_IN_0"}
            v = await view(ref)
            assert refusing(v) == {"Front_IN_1": ["Http"]}
            console = Console(width=200, record=True)
            render_status(console, [v])
            assert "ReadyRole (refusing)" in console.export_text()
            async with echo_servers({"Front_IN_1": fronts["Front_IN_1"]}):
                # Its next trial connection (after 0.25 s, then 0.5 s...) finds it listening.
                with anyio.fail_after(5):
                    while refusing(await view(ref)):
                        await fetch(port)
                        await anyio.sleep(0.05)
                assert {await fetch(port) for _ in range(4)} == {"Front_IN_0", "Front_IN_1"}
