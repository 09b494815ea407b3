"""Host administration on stand-in hosts (the autojump clock): cordon keeps new instances off a
host and survives a restart, uncordon lets placement use it again, a drain moves instances one
update domain at a time and leaves the host empty and Cordoned, refusals change nothing, and a
silent host shows NotReady before it shows Dead."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import trio

from actors import Ref
from fabric.controller import ControllerError, ask, wait_operation
from fabric.controller.host_admin import CordonHost, DrainHost, HostPage, HostView, ListHosts
from fabric.controller.messages import DeleteDeployment, DeploymentView, GetOperation
from tests.fabric.controller.controller_kit import (
    ServiceFactory,
    all_ready,
    config,
    create,
    open_controller,
    settings,
    view,
    wait_view,
)
from tests.fabric.controller.controller_standin import World

pytestmark = pytest.mark.timeout(60)


async def hosts(ref: Ref) -> dict[str, HostView]:
    page: HostPage = await ask(ref, ListHosts(limit=500))
    return {h.name: h for h in page.hosts}


def placed(v: DeploymentView) -> dict[str, str]:
    return {i.id: i.host for i in v.instances}


async def refused(ref: Ref, request: CordonHost | DrainHost, status: int, text: str) -> None:
    with pytest.raises(ControllerError) as caught:
        await ask(ref, request)
    assert caught.value.status == status and text in caught.value.message, caught.value.message
    assert "\n" not in caught.value.message


async def test_cordon_keeps_new_instances_off_and_uncordon_lets_them_back(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.abc.Clock
) -> None:
    config_ = settings(max_hosts=2, host_cores=4)
    folder = service()
    async with open_controller(state_dir, world, config_) as ref:
        await create(ref, folder, timeout=None)
        first = placed(await wait_view(ref, all_ready))
        h1, h2 = sorted(set(first.values()))
        cordoned = await ask(ref, CordonHost(name=h1))
        assert cordoned.state == "Cordoned" and cordoned.cordoned and cordoned.instance_count == 2
        # A new deployment goes only where it may: h2 (h1 keeps what it runs).
        small = config(front=1, back=1)
        await create(ref, folder, slot="staging", name="demo-2", configuration=small, timeout=None)
        staged = await wait_view(ref, all_ready, slot="staging")
        assert set(placed(staged).values()) == {h2}
        assert placed(await view(ref)) == first
        # No room left: the pool's two hosts are one cordoned and one with 0 cores free.
        with pytest.raises(ControllerError, match="capacity"):
            await create(ref, folder, service="other", configuration=small, timeout=None)
    # A restart keeps the cordon (it is in the store).
    async with open_controller(state_dir, world, config_) as ref:
        listed = await hosts(ref)
        assert listed[h1].state == "Cordoned" and listed[h2].state == "Ready"
        await ask(ref, CordonHost(name=h1, cordon=False))
        assert (await hosts(ref))[h1].state == "Ready"
        done = await ask(ref, DeleteDeployment(service="demo", slot="staging"))
        assert (await wait_operation(ref, done.request_id, timeout=600)).status == "Succeeded"
        await create(ref, folder, slot="staging", name="demo-3", configuration=small, timeout=None)
        again = await wait_view(ref, all_ready, slot="staging")
        assert h1 in set(placed(again).values())  # placement spreads onto it again


async def test_drain_moves_instances_domain_by_domain_and_leaves_the_host_cordoned(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.abc.Clock
) -> None:
    world.boot_step = 1.0
    async with open_controller(state_dir, world, settings(max_hosts=3, host_cores=4)) as ref:
        await create(ref, service(domains=3), configuration=config(front=3, back=2), timeout=None)
        before = await wait_view(ref, all_ready)
        domains = {i.id: i.update_domain for i in before.instances}
        host = next(i.host for i in before.instances if i.id == "Front_IN_0")
        moving = {i.id for i in before.instances if i.host == host}
        assert {domains[i] for i in moving} == {0, 2}  # two update domains on the drained host
        await refused(ref, CordonHost(name="nosuchhost"), 404, "no host 'nosuchhost'")
        accepted = await ask(ref, DrainHost(name=host))
        await refused(ref, DrainHost(name=host), 409, "being drained already")
        await refused(ref, CordonHost(name=host, cordon=False), 409, "being drained")
        # Front_IN_0 (domain 0) boots elsewhere but is held before Ready: domain 2 waits for it.
        held = world.hold["demo.demo-1.Front_IN_0"] = anyio.Event()
        with anyio.fail_after(60):
            while not [
                h for w, v, h, _ in world.log if w == "start" and v == "demo.demo-1.Front_IN_0" and h != host
            ]:
                await anyio.sleep(0.1)
        await anyio.sleep(30.0)
        progress = await ask(ref, GetOperation(request_id=accepted.request_id))
        assert progress.status == "InProgress" and progress.description.startswith("update domain 0")
        assert not [v for w, v, *_ in world.log if w == "stop" and v == "demo.demo-1.Front_IN_2"]
        held.set()
        result = await wait_operation(ref, accepted.request_id, timeout=600)
        assert result.status == "Succeeded", result.error_message
        assert "3 instance(s) moved over 2 update domain(s)" in result.description
        after = await wait_view(ref, all_ready)
        assert host not in set(placed(after).values())
        listed = (await hosts(ref))[host]
        assert listed.state == "Cordoned" and listed.instance_count == 0 and listed.cores_used == 0
        # Domain by domain: no instance of update domain 2 stopped before those of domain 0 ran
        # Ready elsewhere, and the instances on other hosts were never touched.
        vm = "demo.demo-1.{}".format
        log = [(what, v) for what, v, _, _ in world.log]
        first_stop_of_2 = min(
            n
            for n, (w, v) in enumerate(log)
            if w == "stop" and v in {vm(i) for i in moving if domains[i] == 2}
        )
        last_start_of_0 = max(
            n
            for n, (w, v) in enumerate(log)
            if w == "start" and v in {vm(i) for i in moving if domains[i] == 0}
        )
        assert last_start_of_0 < first_stop_of_2
        assert {v for w, v in log if w == "stop"} == {vm(i) for i in moving}


async def test_a_drain_without_room_is_refused_and_changes_nothing(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_controller(state_dir, world, settings(max_hosts=2, host_cores=3)) as ref:
        await create(ref, service(), configuration=config(front=2, back=2), timeout=None)
        before = placed(await wait_view(ref, all_ready))
        host = before["Front_IN_0"]
        await refused(ref, DrainHost(name=host), 409, f"cannot drain host {host}: no other host has room")
        assert (await hosts(ref))[host].state == "Ready"
        assert placed(await view(ref)) == before
        assert not [w for w, *_ in world.log if w == "stop"]


async def test_a_silent_host_shows_not_ready_then_dead(
    service: ServiceFactory, world: World, state_dir: Path, autojump_clock: trio.abc.Clock
) -> None:
    config_ = settings(host_failure_timeout=60.0, host_heartbeat_interval=5.0)
    async with open_controller(state_dir, world, config_) as ref:
        await create(ref, service(), timeout=None)
        v = await wait_view(ref, all_ready)
        victim = v.instances[0].host
        listed = await hosts(ref)
        assert {h.state for h in listed.values()} == {"Ready"}
        heard = listed[victim]
        assert heard.kind == "local" and heard.address == "127.0.0.1"
        assert heard.heartbeat_age is not None and heard.heartbeat_age <= 5.0
        world.silent.add(victim)
        await anyio.sleep(15.0)
        late = (await hosts(ref))[victim]
        assert late.state == "NotReady" and late.heartbeat_age is not None and late.heartbeat_age > 10.0
        await anyio.sleep(60.0)
        assert (await hosts(ref))[victim].state == "Dead"
        await refused(ref, DrainHost(name=victim), 409, "is dead")
        with pytest.raises(ControllerError, match="limit"):
            await ask(ref, ListHosts(limit=501))
