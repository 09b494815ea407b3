"""Upgrades, update domain by update domain: Auto (on the autojump clock), Manual, Simultaneous,
refusals, and a failing new version."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import trio

from fabric.controller import ask, wait_operation
from fabric.controller.messages import (
    ControllerError,
    OperationView,
    SetDeploymentStatus,
    UpgradeDeployment,
    WalkUpgradeDomain,
)
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    answers,
    create,
    echo_servers,
    open_controller,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World

VM = "demo.demo-1.{}"
UD0 = {VM.format("Front_IN_0"), VM.format("Back_IN_0")}
UD1 = {VM.format("Front_IN_1")}


async def upgrade(ref: object, package: Path, mode: str = "Auto", timeout: float | None = 60.0) -> str:
    accepted = await ask(
        ref,  # type: ignore[arg-type]
        UpgradeDeployment(service="demo", slot="production", package_path=str(package), mode=mode),  # type: ignore[arg-type]
        timeout=timeout,
    )
    return str(accepted.request_id)


async def walk(ref: object, domain: int) -> OperationView:
    accepted = await ask(ref, WalkUpgradeDomain(service="demo", slot="production", upgrade_domain=domain))  # type: ignore[arg-type]
    return await wait_operation(ref, accepted.request_id)  # type: ignore[arg-type]


async def test_auto_upgrade_walks_domains_in_order(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.abc.Clock
) -> None:
    world.boot_step = 2.0  # each boot takes virtual seconds, as a real one would
    async with open_controller(state_dir, world) as ref:
        await create(ref, service(), timeout=None)
        await wait_view(ref, all_ready)
        world.hold[VM.format("Front_IN_0")] = release = anyio.Event()
        request_id = await upgrade(ref, service(version="v2"), timeout=None)
        await wait_view(
            ref, lambda v: any(i.id == "Front_IN_0" and i.status == "StartingRole" for i in v.instances)
        )
        # Domain 0 is upgrading; domain 1 must wait however long domain 0 takes.
        await anyio.sleep(300)
        assert set(world.events("restart")) == UD0
        assert (await view(ref)).status == "RunningTransitioning"
        release.set()
        done = await wait_operation(ref, request_id, timeout=600)
        assert done.status == "Succeeded" and done.description == "upgrade complete"
        restarts = world.events("restart")
        assert set(restarts[:2]) == UD0 and restarts[2:] == list(UD1)
        v = await view(ref)
        assert all_ready(v) and v.status == "Running"
    assert all("pkg2" in world.booted[vm].role_code_dir for vm in UD0 | UD1)
    assert not (state_dir / "deployments" / v.id / "pkg1").exists()  # the old package is gone


async def test_a_manual_upgrade_waits_for_each_walk_and_keeps_the_domain_out_of_rotation(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        v = await wait_view(ref, all_ready)
        port = v.endpoints[0].port
        fronts = {i.id: int(i.endpoints["Http"].split(":")[1]) for i in v.instances if i.role == "Front"}
        ready = await wait_operation(ref, await upgrade(ref, service(version="v2"), "Manual"))
        assert ready.status == "Succeeded" and "walk update domain 0 next" in ready.description
        assert (await view(ref)).next_upgrade_domain == 0 and world.events("restart") == []
        for refused in (
            WalkUpgradeDomain(service="demo", slot="production", upgrade_domain=1),
            SetDeploymentStatus(service="demo", slot="production", status="Suspended"),
        ):
            with pytest.raises(ControllerError) as caught:
                await ask(ref, refused)
            assert "0" in caught.value.message and caught.value.code in ("BadRequest", "ConflictError")
        async with echo_servers(fronts):
            # Domain 0 walks; Back_IN_0 is slow, so Front_IN_0 is Ready before its domain is.
            world.hold[VM.format("Back_IN_0")] = release = anyio.Event()
            accepted = await ask(ref, WalkUpgradeDomain(service="demo", slot="production", upgrade_domain=0))
            await wait_view(
                ref,
                lambda v: (
                    {i.id: i.status for i in v.instances}
                    == {"Front_IN_0": "ReadyRole", "Front_IN_1": "ReadyRole", "Back_IN_0": "StartingRole"}
                ),
            )
            assert await answers(port) == {"Front_IN_1"}  # the whole domain stays out of rotation
            release.set()
            assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
            assert await answers(port) == {"Front_IN_0", "Front_IN_1"}
        assert set(world.events("restart")) == UD0
        assert (await view(ref)).next_upgrade_domain == 1
        last = await walk(ref, 1)
        assert last.status == "Succeeded" and last.description == "upgrade complete"
        assert (await view(ref)).next_upgrade_domain == -1
        with pytest.raises(ControllerError) as caught:
            await walk(ref, 2)
        assert "no Manual upgrade" in caught.value.message
    assert world.events("restart")[2:] == list(UD1)


async def test_a_simultaneous_upgrade_restarts_everything_at_once(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        await wait_view(ref, all_ready)
        world.hold[VM.format("Front_IN_1")] = release = anyio.Event()
        request_id = await upgrade(ref, service(version="v2"), "Simultaneous")
        await wait_view(
            ref, lambda v: any(i.id == "Front_IN_1" and i.status == "StartingRole" for i in v.instances)
        )
        assert set(world.events("restart")) == UD0 | UD1  # domain 1 did not wait for domain 0
        release.set()
        assert (await wait_operation(ref, request_id)).status == "Succeeded"


async def test_an_upgrade_that_fails_stops_the_walk(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        await wait_view(ref, all_ready)
        world.outcome[VM.format("Front_IN_0")] = "CyclingRole"
        done = await wait_operation(ref, await upgrade(ref, service(version="v2")))
        assert done.status == "Failed" and done.http_status_code == 500
        assert "update domain 0: instance Front_IN_0 is CyclingRole" in done.error_message
        assert VM.format("Front_IN_1") not in world.events("restart")


async def test_an_upgrade_that_cannot_be_done_in_place_changes_nothing(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        before = await wait_view(ref, all_ready)
        other = service(version="v2")
        definition = other / "service.toml"
        definition.write_text(definition.read_text().replace('name = "Control"', 'name = "Admin"'))
        with pytest.raises(ControllerError) as caught:
            await upgrade(ref, other)
        assert caught.value.code == "BadRequest"
        assert "role Front changes its endpoints" in caught.value.message and "swap" in caught.value.message
        with pytest.raises(ControllerError) as bad_mode:
            await upgrade(ref, service(version="v3"), "Sideways")
        assert bad_mode.value.code == "BadRequest"
        assert await view(ref) == before
    folder = state_dir / "deployments" / before.id
    assert sorted(p.name for p in folder.iterdir()) == ["config1.toml", "pkg1"]
    assert world.events("restart") == []


async def test_a_one_role_upgrade_restarts_only_that_role(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        await wait_view(ref, all_ready)
        accepted = await ask(
            ref,
            UpgradeDeployment(
                service="demo", slot="production", package_path=str(service(version="v2")), role="Back"
            ),
        )
        assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
        assert world.events("restart") == [VM.format("Back_IN_0")]
        assert "pkg2" in world.booted[VM.format("Back_IN_0")].role_code_dir
        with pytest.raises(ControllerError) as caught:
            await ask(
                ref,
                UpgradeDeployment(
                    service="demo", slot="production", package_path=str(service()), role="Nope"
                ),
            )
        assert caught.value.code == "BadRequest" and "Nope" in caught.value.message
    # Front keeps running its first package: the folder stays, the deployment mixes both.
    assert all("pkg1" in world.booted[VM.format(i)].role_code_dir for i in ("Front_IN_0", "Front_IN_1"))
