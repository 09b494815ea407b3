"""Recovery from the store: after the fabric process is SIGKILLed, a new controller brings
every deployment back as it was."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import msgspec
import pytest

from fabric.controller import ask, wait_operation
from fabric.controller.messages import (
    DeploymentView,
    GetOperation,
    ListDeployments,
    SetDeploymentStatus,
    WalkUpgradeDomain,
)
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    create,
    open_controller,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World
from tests.paths import ROOT


def placement(v: DeploymentView) -> dict[str, tuple[str, int, int, dict[str, str]]]:
    return {i.id: (i.host, i.update_domain, i.fault_domain, i.endpoints) for i in v.instances}


@pytest.mark.timeout(60)
async def test_a_sigkilled_fabric_comes_back_as_it_was(service: ServiceFactory, state_dir: Path) -> None:
    v1, v2 = service(), service(version="v2")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    command = [
        sys.executable,
        "-m",
        "tests.fabric.controller.controller_child",
        str(state_dir),
        str(v1),
        str(v2),
    ]
    async with await anyio.open_process(command, stdout=subprocess.PIPE, env=env) as process:
        try:
            assert process.stdout is not None
            with anyio.fail_after(30):
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive()
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
    seen = msgspec.json.decode(line)
    before = msgspec.convert(seen["production"], DeploymentView)

    world = World()
    async with open_controller(state_dir, world) as ref:
        # The walk the kill cut short reads Failed; the Manual upgrade still waits for domain 0.
        walk = await ask(ref, GetOperation(request_id=seen["walk"]))
        assert walk.status == "Failed" and "restarted" in walk.error_message
        after = await wait_view(ref, lambda v: all_ready(v) and v.status == "Running")
        assert (after.id, after.name, after.next_upgrade_domain) == (before.id, before.name, 0)
        assert placement(after) == placement(before)
        assert after.endpoints == before.endpoints  # the same public port
        staging = await view(ref, "staging")
        assert staging.status == "Suspended" and {i.status for i in staging.instances} == {"StoppedVM"}
        assert all(vm.startswith("demo.demo-1.") for vm in world.events("start"))  # staging stays down
        # The upgrade carries on where it was.
        for domain in (0, 1):
            accepted = await ask(
                ref, WalkUpgradeDomain(service="demo", slot="production", upgrade_domain=domain)
            )
            assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
        assert (await view(ref)).next_upgrade_domain == -1
    assert all(
        "pkg2" in world.booted[vm].role_code_dir for vm in world.booted if vm.startswith("demo.demo-1.")
    )


async def test_a_restart_keeps_suspended_deployments_and_moves_a_taken_port(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        before = await wait_view(ref, all_ready)
        accepted = await ask(ref, SetDeploymentStatus(service="demo", slot="production", status="Suspended"))
        await wait_operation(ref, accepted.request_id)
    port = before.endpoints[0].port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        again = World()
        async with open_controller(state_dir, again) as ref:
            [after] = await ask(ref, ListDeployments())
            assert after.status == "Suspended" and again.events("start") == []
            [public] = after.endpoints
            assert public.port != port and public.requested_port == service.port
            assert placement(after) == placement(before)
            accepted = await ask(
                ref, SetDeploymentStatus(service="demo", slot="production", status="Running")
            )
            await wait_operation(ref, accepted.request_id)
            await wait_view(ref, all_ready)


async def test_a_deployment_deleted_while_the_fabric_was_down_is_finished_on_restart(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    from fabric.controller.store import Store

    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        v = await wait_view(ref, all_ready)
    store = Store(state_dir / "fabric.db", "local")
    [record] = store.deployments()
    store.put(msgspec.structs.replace(record, goal="Deleting"))  # as if killed mid-delete
    store.close()
    async with open_controller(state_dir, World()) as ref:
        with anyio.fail_after(10):
            while await ask(ref, ListDeployments()):
                await anyio.sleep(0.01)
    assert not (state_dir / "deployments" / v.id).exists()


async def test_a_public_port_that_lands_on_an_instance_port_moves_the_instance(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    from fabric.controller.store import Store

    async with open_controller(state_dir, world) as ref:
        await create(ref, service(), start=False)
        before = await view(ref)
    port = before.endpoints[0].port
    store = Store(state_dir / "fabric.db", "local")
    inst = next(r for r in store.instances(before.id) if r.vm.endswith("Front_IN_0"))
    store.put(msgspec.structs.replace(inst, ports={**inst.ports, "Http": port + 1}))
    store.close()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        async with open_controller(state_dir, World()) as ref:
            after = await view(ref)
    # The public port moves on (to port + 1, where the instance was, unless another process of
    # this machine holds that too), and the instance is never left on the public port.
    public = after.endpoints[0].port
    assert public != port and public >= port + 1
    moved = next(i for i in after.instances if i.id == "Front_IN_0")
    assert moved.endpoints["Http"] != f"127.0.0.1:{public}"
    store = Store(state_dir / "fabric.db", "local")
    assert next(r for r in store.instances(before.id) if r.vm.endswith("Front_IN_0")).ports["Http"] != public
