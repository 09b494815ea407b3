"""Operations on a running deployment: their lifecycle, suspend and run, instance actions,
delete, swap, and refusals while another operation runs."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

from fabric.controller import ask, wait_operation
from fabric.controller.messages import (
    ChangeConfiguration,
    ControllerError,
    DeleteDeployment,
    GetOperation,
    InstanceAction,
    ListDeployments,
    SetDeploymentStatus,
    SwapDeployments,
)
from fabric.controller.store import Store
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    answers,
    create,
    echo_servers,
    fetch,
    open_controller,
    settings,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World

VM = "demo.demo-1.{}"


async def answers_at_once(port: int, tries: int = 8) -> set[str]:
    """Who answers on a public port over several connections made at once (with no instance in
    rotation, each waits out the balancer's queue timeout: 5 s, not 40 s one after the other)."""
    got: list[str] = []

    async def one() -> None:
        got.append(await fetch(port))

    async with anyio.create_task_group() as tg:
        for _ in range(tries):
            tg.start_soon(one)
    return set(got)


async def test_a_reboot_is_in_progress_until_the_instance_is_ready_again(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        await wait_view(ref, all_ready)
        vm = VM.format("Front_IN_1")
        world.hold[vm] = release = anyio.Event()
        accepted = await ask(
            ref, InstanceAction(service="demo", slot="production", instance_id="Front_IN_1", action="reboot")
        )
        await wait_view(
            ref, lambda v: any(i.id == "Front_IN_1" and i.status == "StartingRole" for i in v.instances)
        )
        assert (await ask(ref, GetOperation(request_id=accepted.request_id))).status == "InProgress"
        # Another change meanwhile is refused with 409, and nothing changes.
        with pytest.raises(ControllerError) as caught:
            await ask(ref, SetDeploymentStatus(service="demo", slot="production", status="Suspended"))
        assert (caught.value.code, caught.value.status) == ("ConflictError", 409)
        assert accepted.request_id in caught.value.message
        release.set()
        done = await wait_operation(ref, accepted.request_id)
        assert done.status == "Succeeded" and "Front_IN_1 reboot done" in done.description
        v = await view(ref)
        assert all_ready(v) and next(i for i in v.instances if i.id == "Front_IN_1").restarts == 1
    assert world.events("restart") == [vm]


async def test_reimage_and_rebuild_and_a_failing_instance(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        await wait_view(ref, all_ready)

        async def act(instance: str, action: str) -> str:
            accepted = await ask(
                ref, InstanceAction(service="demo", slot="production", instance_id=instance, action=action)
            )
            done = await wait_operation(ref, accepted.request_id)
            return done.error_message or done.status

        assert await act("Back_IN_0", "reimage") == "Succeeded"
        assert ("restart", VM.format("Back_IN_0")) in [(w, vm) for w, vm, _, d in world.log if d == "reimage"]
        assert await act("Front_IN_0", "rebuild") == "Succeeded"
        assert ("stop", VM.format("Front_IN_0"), "delete") in [(w, vm, d) for w, vm, _, d in world.log]
        world.outcome[VM.format("Front_IN_1")] = "FailedStartingRole"
        message = await act("Front_IN_1", "reboot")
        assert "Front_IN_1 is FailedStartingRole" in message and "fix the role" in message
        with pytest.raises(ControllerError) as caught:
            await act("Front_IN_7", "reboot")
        assert caught.value.code == "ResourceNotFound" and "Front_IN_0, Front_IN_1" in caught.value.message


async def test_suspend_stops_traffic_and_instances_and_run_brings_them_back(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        v = await wait_view(ref, all_ready)
        port = v.endpoints[0].port
        fronts = {i.id: int(i.endpoints["Http"].split(":")[1]) for i in v.instances if i.role == "Front"}
        async with echo_servers(fronts):
            assert await answers(port) == {"Front_IN_0", "Front_IN_1"}
            accepted = await ask(
                ref, SetDeploymentStatus(service="demo", slot="production", status="Suspended")
            )
            assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
            v = await view(ref)
            assert v.status == "Suspended" and {i.status for i in v.instances} == {"StoppedVM"}
            assert await answers_at_once(port) == {""}
            assert v.endpoints[0].port == port  # the public port stays the deployment's
            accepted = await ask(
                ref, SetDeploymentStatus(service="demo", slot="production", status="Running")
            )
            assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
            await wait_view(ref, all_ready)
            assert await answers(port) == {"Front_IN_0", "Front_IN_1"}
        with pytest.raises(ControllerError) as caught:
            await ask(ref, SetDeploymentStatus(service="demo", slot="production", status="Paused"))  # type: ignore[arg-type]
        assert caught.value.code == "BadRequest"
    assert sorted(world.events("stop")) == sorted(
        VM.format(i) for i in ("Back_IN_0", "Front_IN_0", "Front_IN_1")
    )


async def test_delete_wipes_the_instances_and_forgets_the_deployment(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        v = await wait_view(ref, all_ready)
        accepted = await ask(ref, DeleteDeployment(service="demo", slot="production"))
        assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
        assert await ask(ref, ListDeployments()) == []
        with pytest.raises(ControllerError) as caught:
            await view(ref)
        assert caught.value.status == 404
        with socket.socket() as s:
            s.bind(("127.0.0.1", v.endpoints[0].port))
    assert {d for w, _, _, d in world.log if w == "stop"} == {"delete"}
    assert len(world.events("stop")) == 3
    assert not (state_dir / "deployments" / v.id).exists()
    store = Store(state_dir / "fabric.db", "local")
    assert store.deployments() == [] and store.instances(v.id) == [] and store.public_ports(v.id) == []


async def test_swap_exchanges_the_public_ports(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world, settings(max_hosts=8)) as ref:
        await create(ref, service(), name="blue")
        await create(ref, service(version="v2"), slot="staging", name="green")
        prod = await wait_view(ref, all_ready)
        stage = await wait_view(ref, all_ready, slot="staging")
        prod_port, stage_port = prod.endpoints[0].port, stage.endpoints[0].port
        assert stage.endpoints[0].requested_port == prod_port  # both asked for it; staging got the next
        green = {
            f"green {i.id}": int(i.endpoints["Http"].split(":")[1])
            for i in stage.instances
            if i.role == "Front"
        }
        async with echo_servers(green):
            accepted = await ask(ref, SwapDeployments(service="demo"))
            assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
            now_prod, now_stage = await view(ref), await view(ref, "staging")
            assert (now_prod.name, now_prod.endpoints[0].port) == ("green", prod_port)
            assert (now_stage.name, now_stage.endpoints[0].port) == ("blue", stage_port)
            # Clients of the production port now reach green's instances.
            assert await answers(prod_port) == {"green Front_IN_0", "green Front_IN_1"}


async def test_a_swap_with_an_empty_slot_moves_the_deployment_to_that_slots_address(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    """As in Azure, each slot keeps its address: the deployment swapped into an empty staging
    answers on a staging port, production's answers nothing; swapped back, production's again."""
    async with open_controller(state_dir, world) as ref:
        await create(ref, service(), name="blue")
        prod = await wait_view(ref, all_ready)
        prod_port = prod.endpoints[0].port
        blue = {
            f"blue {i.id}": int(i.endpoints["Http"].split(":")[1])
            for i in prod.instances
            if i.role == "Front"
        }
        async with echo_servers(blue):
            assert await answers(prod_port) == set(blue)
            accepted = await ask(ref, SwapDeployments(service="demo"))
            assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
            stage = await view(ref, "staging")
            stage_port = stage.endpoints[0].port
            assert stage.name == "blue" and stage_port != prod_port
            assert stage.endpoints[0].requested_port == prod_port
            assert await answers(stage_port) == set(blue)
            with socket.socket() as s:
                s.bind(("127.0.0.1", prod_port))  # nothing holds production's port
            assert await ask(ref, ListDeployments()) and (await view(ref, "staging")).slot == "staging"
            accepted = await ask(ref, SwapDeployments(service="demo"))
            assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
            back = await view(ref)
            assert back.endpoints[0].port == prod_port and await answers(prod_port) == set(blue)
            with socket.socket() as s:
                s.bind(("127.0.0.1", stage_port))


async def test_a_swap_needs_matching_endpoints(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    other = service()
    definition = other / "service.toml"
    definition.write_text(definition.read_text().replace('name = "Http"', 'name = "Web"'))
    async with open_controller(state_dir, world, settings(max_hosts=8)) as ref:
        await create(ref, service(), name="blue")
        await create(ref, other, slot="staging", name="green")
        with pytest.raises(ControllerError) as caught:
            await ask(ref, SwapDeployments(service="demo"))
        assert caught.value.code == "BadRequest" and "Front/Http" in caught.value.message
        assert (await view(ref)).name == "blue"


async def test_a_delete_cancels_a_stuck_operation(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        await wait_view(ref, all_ready)
        world.hold[VM.format("Back_IN_0")] = anyio.Event()  # never released: the reboot never ends
        stuck = await ask(
            ref, InstanceAction(service="demo", slot="production", instance_id="Back_IN_0", action="reboot")
        )
        with pytest.raises(ControllerError):
            await ask(ref, ChangeConfiguration(service="demo", slot="production", configuration=b""))
        deleted = await ask(ref, DeleteDeployment(service="demo", slot="production"))
        assert (await wait_operation(ref, deleted.request_id)).status == "Succeeded"
        cancelled = await wait_operation(ref, stuck.request_id)
        assert cancelled.status == "Failed" and "deleted" in cancelled.error_message
