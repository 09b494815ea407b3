"""Configuration changes: settings raise changing/changed domain by domain; instance counts
add or remove instances and tell everyone of the new topology."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.controller import ask, wait_operation
from fabric.controller.messages import ChangeConfiguration, ControllerError, OperationView, WalkUpgradeDomain
from roles.protocol import Change
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    answers,
    config,
    create,
    echo_servers,
    open_controller,
    settings,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World

VM = "demo.demo-1.{}"


async def change(ref: object, configuration: bytes, mode: str = "Auto") -> OperationView:
    accepted = await ask(
        ref,  # type: ignore[arg-type]
        ChangeConfiguration(
            service="demo",
            slot="production",
            configuration=configuration,
            configuration_name="config.toml",
            mode=mode,  # type: ignore[arg-type]
        ),
    )
    return await wait_operation(ref, accepted.request_id)  # type: ignore[arg-type]


async def test_a_settings_change_reaches_each_instance_of_the_role_in_domain_order(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        await wait_view(ref, all_ready)
        world.apply_answer = "recycling"  # a changing handler cancels: the role recycles
        done = await change(ref, config(greeting="bonjour"))
        assert done.status == "Succeeded" and done.description == "configuration change complete"
        assert world.events("apply") == [VM.format("Front_IN_0"), VM.format("Front_IN_1")]
        for vm in (VM.format("Front_IN_0"), VM.format("Front_IN_1")):
            [(changes, env)] = world.applied[vm]
            assert changes == [Change(kind="setting", name="Greeting")]
            assert env.settings == {"Greeting": "bonjour"}
        assert VM.format("Back_IN_0") not in world.applied  # its settings did not change
        assert all_ready(await view(ref))
        assert world.events("restart") == []  # a settings change does not reboot anything


async def test_scaling_up_adds_instances_and_tells_everyone(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        await wait_view(ref, all_ready)
        done = await change(ref, config(front=3))
        assert done.status == "Succeeded" and done.description == "added Front_IN_2"
        v = await wait_view(ref, all_ready)
        assert v.roles == {"Front": 3, "Back": 1}
        new = next(i for i in v.instances if i.id == "Front_IN_2")
        assert new.update_domain == 0 and new.host
        assert world.events("start")[-1] == VM.format("Front_IN_2")
        for old in ("Front_IN_0", "Front_IN_1", "Back_IN_0"):
            [(changes, env)] = world.applied[VM.format(old)]
            assert changes == [Change(kind="topology", name="Front")]
            assert [i.id for i in env.roles["Front"]] == ["Front_IN_0", "Front_IN_1", "Front_IN_2"]
        booted = world.booted[VM.format("Front_IN_2")].environment
        assert len(booted.roles["Front"]) == 3


async def test_scaling_down_removes_the_highest_instances(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        v = await wait_view(ref, all_ready)
        port = v.endpoints[0].port
        fronts = {i.id: int(i.endpoints["Http"].split(":")[1]) for i in v.instances if i.role == "Front"}
        async with echo_servers(fronts):
            done = await change(ref, config(front=1))
            assert done.description == "removed Front_IN_1"
            assert await answers(port) == {"Front_IN_0"}
        v = await view(ref)
        assert [i.id for i in v.instances] == ["Back_IN_0", "Front_IN_0"]
        assert ("stop", VM.format("Front_IN_1"), "delete") in [(w, vm, d) for w, vm, _, d in world.log]
        [(changes, env)] = world.applied[VM.format("Front_IN_0")]
        assert changes == [Change(kind="topology", name="Front")] and len(env.roles["Front"]) == 1


async def test_a_manual_configuration_change_walks_domains(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        await wait_view(ref, all_ready)
        ready = await change(ref, config(greeting="hola"), mode="Manual")
        assert "walk update domain 0 next" in ready.description
        assert world.events("apply") == []
        for domain, vm in ((0, "Front_IN_0"), (1, "Front_IN_1")):
            accepted = await ask(
                ref, WalkUpgradeDomain(service="demo", slot="production", upgrade_domain=domain)
            )
            assert (await wait_operation(ref, accepted.request_id)).status == "Succeeded"
            assert world.events("apply")[-1] == VM.format(vm)
        assert (await view(ref)).next_upgrade_domain == -1


async def test_a_bad_or_oversized_configuration_changes_nothing(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world, settings(max_hosts=2, host_cores=2)) as ref:
        await create(ref, service())
        before = await wait_view(ref, all_ready)
        for configuration, code, words in (
            (config(front=9), "ConflictError", "not enough capacity"),
            (config().replace(b'"Queue"', b'"Colour"'), "BadRequest", "config.toml"),
        ):
            with pytest.raises(ControllerError) as caught:
                await change(ref, configuration)
            assert caught.value.code == code and words in caught.value.message, caught.value.message
        assert await view(ref) == before
    folder = state_dir / "deployments" / before.id
    assert sorted(p.name for p in folder.iterdir()) == ["config1.toml", "pkg1"]
    assert world.events("apply") == [] and len(world.events("start")) == 3


async def test_scaling_past_the_limit_or_the_pool_is_refused_and_changes_nothing(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        before = await wait_view(ref, all_ready)
        hosts = set(world.hosts)
        cases = [
            (config(front=1_000_000_000), "BadRequest", "over the limit of 1000"),
            (config(front=999, back=2), "BadRequest", "1001 instances together"),
            (config(front=40), "ConflictError", "not enough capacity"),
        ]
        for configuration, code, words in cases:
            with pytest.raises(ControllerError) as caught:
                await ask(
                    ref,
                    ChangeConfiguration(
                        service="demo",
                        slot="production",
                        configuration=configuration,
                        configuration_name="config.toml",
                    ),
                )
            assert caught.value.code == code and words in caught.value.message, caught.value.message
            assert "\n" not in caught.value.message
        assert await view(ref) == before
        assert set(world.hosts) == hosts  # no host was spun up for the refused plans
        assert len(world.events("start")) == len(before.instances)
