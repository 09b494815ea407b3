"""Creating deployments: placement, domains, ports, topology, public ports, and refusals that
change nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fabric.controller import ask
from fabric.controller.messages import (
    ControllerError,
    CreateDeployment,
    GetOperation,
    ListDeployments,
)
from fabric.controller.store import Store
from fabric.model.package import build_package
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    answers,
    change_status,
    config,
    create,
    echo_servers,
    open_controller,
    settings,
    settled,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World


async def test_a_deployment_is_placed_across_racks_with_its_own_ports(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    folder = service()
    async with open_controller(state_dir, world) as ref:
        op = await create(ref, folder)
        assert op.status == "Succeeded" and op.description == "started 3 instances"
        v = await wait_view(ref, all_ready)
        assert v.status == "Running" and v.roles == {"Front": 2, "Back": 1} and v.upgrade_domain_count == 2
        by_id = {i.id: i for i in v.instances}
        assert set(by_id) == {"Front_IN_0", "Front_IN_1", "Back_IN_0"}
        # Update domain = index mod 2; the two Front instances sit in different racks and hosts.
        assert (by_id["Front_IN_0"].update_domain, by_id["Front_IN_1"].update_domain) == (0, 1)
        assert by_id["Front_IN_0"].fault_domain != by_id["Front_IN_1"].fault_domain
        assert by_id["Front_IN_0"].host != by_id["Front_IN_1"].host
        # Every endpoint of every instance has its own local port.
        ports = [e for i in v.instances for e in i.endpoints.values()]
        assert len(set(ports)) == len(ports) == 5
        assert set(by_id["Front_IN_0"].endpoints) == {"Http", "Control"}
        # The input endpoint listens on the definition's port.
        [public] = v.endpoints
        assert (public.role, public.name, public.port, public.requested_port) == (
            "Front",
            "Http",
            service.port,
            0,
        )


async def test_each_guest_gets_the_whole_topology_and_its_settings(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        v = await wait_view(ref, all_ready)
    booted = world.booted["demo.demo-1.Front_IN_1"]
    env = booted.environment
    assert env.current_instance.id == "Front_IN_1" and env.current_instance.update_domain == 1
    assert env.settings == {"Greeting": "hello"}
    assert env.deployment_id == v.id
    assert {r: [i.id for i in insts] for r, insts in env.roles.items()} == {
        "Front": ["Front_IN_0", "Front_IN_1"],
        "Back": ["Back_IN_0"],
    }
    gossip = env.roles["Back"][0].endpoints["Gossip"]
    back = next(i for i in v.instances if i.id == "Back_IN_0")
    assert f"{gossip.host}:{gossip.port}" == back.endpoints["Gossip"]
    assert booted.vm_root.endswith("vms/demo.demo-1.Front_IN_1")
    assert "pkg1" in booted.role_code_dir


async def test_a_taken_public_port_moves_to_the_next_free_one(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    folder = service()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", service.port))
        squatter.listen()
        async with open_controller(state_dir, world) as ref:
            await create(ref, folder)
            [public] = (await view(ref)).endpoints
    assert public.requested_port == service.port and public.port > service.port


async def test_traffic_follows_instance_status(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    async with open_controller(state_dir, world) as ref:
        await create(ref, service())
        v = await wait_view(ref, all_ready)
        port = v.endpoints[0].port
        fronts = {i.id: int(i.endpoints["Http"].split(":")[1]) for i in v.instances if i.role == "Front"}
        async with echo_servers(fronts):
            await settled(ref)
            assert await answers(port) == {"Front_IN_0", "Front_IN_1"}
            await change_status(world, "demo.demo-1.Front_IN_0", "BusyRole")
            await settled(ref)
            assert await answers(port) == {"Front_IN_1"}
            await change_status(world, "demo.demo-1.Front_IN_1", "StoppingRole")
            await settled(ref)
            # Nobody in rotation: the connection waits for an instance, then is reset.
            assert await answers(port, tries=1) == {""}
            await change_status(world, "demo.demo-1.Front_IN_0", "ReadyRole")
            await settled(ref)
            assert await answers(port) == {"Front_IN_0"}


async def test_a_deployment_can_be_created_from_a_cspkg_and_suspended(
    service: ServiceFactory, world: World, state_dir: Path, tmp_path: Path
) -> None:
    package = tmp_path / "demo.cspkg"
    build_package(service(), package)
    async with open_controller(state_dir, world) as ref:
        op = await create(ref, package, start=False)
        assert op.status == "Succeeded"
        v = await view(ref)
        assert v.status == "Suspended"
        assert {i.status for i in v.instances} == {"StoppedVM"}
        assert world.events("start") == []


async def _refused(ref: object, command: CreateDeployment) -> ControllerError:
    with pytest.raises(ControllerError) as caught:
        await ask(ref, command)  # type: ignore[arg-type]
    return caught.value


def _command(folder: Path, **changes: object) -> CreateDeployment:
    values: dict[str, object] = {
        "service": "demo",
        "slot": "production",
        "name": "demo-1",
        "package_path": str(folder),
        "configuration": config(),
        "configuration_name": "config.toml",
    }
    values.update(changes)
    return CreateDeployment(**values)  # type: ignore[arg-type]


def _nothing_left(state_dir: Path, world: World, port: int) -> None:
    store = Store(state_dir / "fabric.db", "local")
    assert store.deployments() == [] and store.hosts() == []
    store.close()
    assert list((state_dir / "deployments").iterdir()) == []
    assert world.hosts == {}  # no host was spun up
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the public port was let go


async def test_bad_requests_are_refused_before_anything_changes(
    service: ServiceFactory, world: World, state_dir: Path, tmp_path: Path
) -> None:
    folder = service()
    big = service(front_size="ExtraLarge")
    async with open_controller(state_dir, world) as ref:
        cases = {
            "missing package": (_command(tmp_path / "nope.cspkg"), "BadRequest", "does not exist"),
            "bad configuration": (
                _command(folder, configuration=b"service_name = 3"),
                "BadRequest",
                "config",
            ),
            "bad slot": (_command(folder, slot="testing"), "BadRequest", "production or staging"),
            "bad name": (_command(folder, name="../etc"), "BadRequest", "not valid"),
            "too big": (_command(big), "BadRequest", "8 cores"),
            "no capacity": (
                _command(folder, configuration=config(front=20)),
                "ConflictError",
                "not enough capacity",
            ),
            "a billion instances": (
                _command(folder, configuration=config(front=1_000_000_000)),
                "BadRequest",
                "over the limit of 1000",
            ),
            "over the limit together": (
                _command(folder, configuration=config(front=600, back=401)),
                "BadRequest",
                "1001 instances together",
            ),
        }
        for label, (command, code, words) in cases.items():
            error = await _refused(ref, command)
            assert error.code == code, label
            assert words in error.message, (label, error.message)
            assert error.status == (409 if code == "ConflictError" else 400)
            assert "\n" not in error.message
        assert await ask(ref, ListDeployments()) == []
        with pytest.raises(ControllerError) as caught:
            await ask(ref, GetOperation(request_id="nope"))
        assert (caught.value.code, caught.value.status) == ("ResourceNotFound", 404)
    _nothing_left(state_dir, world, service.port)


async def test_a_slot_or_name_in_use_is_a_conflict(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    folder = service()
    async with open_controller(state_dir, world, settings(max_hosts=8)) as ref:
        await create(ref, folder)
        again = await _refused(ref, _command(folder, name="demo-2"))
        assert again.code == "ConflictError" and "already has a production deployment" in again.message
        same_name = await _refused(ref, _command(folder, slot="staging"))
        assert same_name.code == "ConflictError" and "named demo-1" in same_name.message
        assert [d.name for d in await ask(ref, ListDeployments())] == ["demo-1"]


async def test_a_host_that_cannot_start_fails_the_operation_with_where_to_look(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    from fabric.host.messages import HostConfig

    real = world.factory()

    async def broken(controller: object, config: HostConfig) -> object:
        if config.host_id == "local-host2":
            raise RuntimeError("no such interpreter")
        return await real(controller, config)  # type: ignore[arg-type]

    world.factory = lambda: broken  # type: ignore[assignment,method-assign,return-value]
    async with open_controller(state_dir, world) as ref:
        op = await create(ref, service())
        assert op.status == "Failed" and op.error_code == "InternalError"
        assert "local-host2 did not start (no such interpreter)" in op.error_message
        assert "hosts/local-host2/host.out.log" in op.error_message
        v = await view(ref)
        failed = next(i for i in v.instances if i.host == "local-host2")
        assert failed.status == "FailedStartingVM"


async def test_a_hosts_instances_start_in_one_ask_and_one_refused_fails_alone(
    service: ServiceFactory, world: World, state_dir: Path
) -> None:
    world.refuse["demo.demo-1.Front_IN_1"] = "its first process did not start"
    async with open_controller(state_dir, world, settings(max_hosts=1)) as ref:
        op = await create(ref, service())
        assert op.status == "Failed" and op.error_code == "InternalError"
        assert "starting Front_IN_1 failed: its first process did not start" in op.error_message
        v = await wait_view(ref, lambda v: sum(i.status == "ReadyRole" for i in v.instances) == 2)
        assert world.running() == {
            "demo.demo-1.Front_IN_0": "local-host1",
            "demo.demo-1.Back_IN_0": "local-host1",
        }
    # One host, one round trip for its three instances; the refused one did not take its
    # siblings down with it.
    assert [sorted(vms) for vms in world.start_asks] == [
        ["demo.demo-1.Back_IN_0", "demo.demo-1.Front_IN_0", "demo.demo-1.Front_IN_1"]
    ]
    by_id = {i.id: i.status for i in v.instances}
    assert by_id["Front_IN_0"] == by_id["Back_IN_0"] == "ReadyRole"
    assert by_id["Front_IN_1"] != "ReadyRole"


MANY_ENDPOINTS = """
name = "Wide"

[[roles]]
name = "W"
kind = "worker"
vm_size = "ExtraSmall"
{endpoints}
"""


async def test_more_local_ports_than_exist_is_a_conflict_at_once(
    world: World, state_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "wide"
    (folder / "W").mkdir(parents=True)
    (folder / "W" / "role.py").write_text("")
    endpoints = "".join(
        f'\n[[roles.internal_endpoints]]\nname = "E{i}"\nprotocol = "tcp"\n' for i in range(20)
    )
    (folder / "service.toml").write_text(MANY_ENDPOINTS.format(endpoints=endpoints))
    wide = b'service_name = "Wide"\n\n[[roles]]\nname = "W"\ninstances = 900\n'
    # Room for 900 instances' cores, not for their 18,000 ports (the range below the ephemeral
    # ports holds 12,768 by default).
    async with open_controller(state_dir, world, settings(max_hosts=120, host_cores=8)) as ref:
        error = await _refused(ref, _command(folder, configuration=wide))
        assert (error.code, error.status) == ("ConflictError", 409), error.message
        assert "not enough local ports: the instances need 18000" in error.message
        assert "\n" not in error.message
        assert await ask(ref, ListDeployments()) == []
    store = Store(state_dir / "fabric.db", "local")
    assert store.deployments() == [] and store.hosts() == []
    store.close()
    assert world.hosts == {}
