"""Configuration and topology changes through the bootstrapper (ApplyEnvironment)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx
import msgspec
import pytest

from fabric.guest.messages import ApplyEnvironment, InstanceStatus
from fabric.model.definition import Binding, InputEndpoint, RoleDefinition, Site
from roles.protocol import Change, InstanceInfo
from tests.fabric.guest.guest_kit import Vm, boot, free_port

pytestmark = pytest.mark.timeout(30)

MakeVm = Callable[[RoleDefinition], Vm]
ROLE = RoleDefinition(name="Worker", kind="worker")

LISTENING_WORKER = """
from pathlib import Path

from roles import RoleEntryPoint, RoleEnvironment


@RoleEnvironment.changing.subscribe
def changing(args):
    if any(change.name == "NeedsRestart" for change in args.changes):
        args.cancel = True


@RoleEnvironment.changed.subscribe
def changed(args):
    Path("changed.txt").write_text(RoleEnvironment.get_config_setting("Greeting"))


@RoleEnvironment.simultaneous_changed.subscribe
def simultaneous(args):
    Path("simultaneous.txt").write_text(",".join(sorted(RoleEnvironment.roles)))


class Worker(RoleEntryPoint):
    async def run(self):
        import anyio
        await anyio.sleep_forever()
"""


async def wait_text(vm: Vm, name: str) -> str:
    path = vm.disk.approot / name
    with anyio.fail_after(5):
        while not path.exists() or not path.read_text():
            await anyio.sleep(0.02)
    return path.read_text()


async def test_an_accepted_change_raises_changed_without_a_recycle(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", LISTENING_WORKER)
    config = vm.config(values={"Greeting": "hello"})
    async with boot(vm, config) as booted:
        ready = await booted.wait_for("ReadyRole")
        new = msgspec.structs.replace(config.environment, settings={"Greeting": "bonjour"})
        answer = await booted.ref.ask(
            ApplyEnvironment(environment=new, changes=[Change(kind="setting", name="Greeting")])
        )
        assert answer == "applied"
        assert await wait_text(vm, "changed.txt") == "bonjour"
        assert booted.last.role_pid == ready.role_pid and booted.last.restarts == 0


async def test_a_cancelled_change_recycles_the_role_with_the_new_environment(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", LISTENING_WORKER)
    config = vm.config(values={"Greeting": "hello", "NeedsRestart": "a"})
    async with boot(vm, config) as booted:
        ready = await booted.wait_for("ReadyRole")
        new = msgspec.structs.replace(config.environment, settings={"Greeting": "hallo", "NeedsRestart": "b"})
        mark = len(booted.seen)
        answer = await booted.ref.ask(
            ApplyEnvironment(environment=new, changes=[Change(kind="setting", name="NeedsRestart")])
        )
        assert answer == "recycling"
        stopping = await booted.wait_for("StoppingRole", after=mark)
        assert "cancelled" in stopping.detail

        def back(status: InstanceStatus) -> bool:
            return status.status == "ReadyRole" and status.role_pid != ready.role_pid

        again = await booted.wait_for(back, after=mark)
        assert again.restarts == 1
    assert not (vm.disk.approot / "changed.txt").exists()


async def test_a_blast_topology_change_is_simultaneous_and_never_recycles(make_vm: MakeVm) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", LISTENING_WORKER)
    config = vm.config(topology_change_discovery="Blast")
    async with boot(vm, config) as booted:
        ready = await booted.wait_for("ReadyRole")
        other = InstanceInfo(id="Cache_IN_0", role_name="Cache", update_domain=0, fault_domain=0)
        new = msgspec.structs.replace(config.environment, roles={"Cache": [other]})
        answer = await booted.ref.ask(
            ApplyEnvironment(environment=new, changes=[Change(kind="topology", name="Cache")])
        )
        assert answer == "applied"
        assert "Cache" in await wait_text(vm, "simultaneous.txt")
        assert booted.last.role_pid == ready.role_pid
        assert "StoppingRole" not in booted.statuses


async def test_events_fire_in_both_waiishost_and_w3wp(make_vm: MakeVm) -> None:
    role = RoleDefinition(
        name="Web",
        kind="web",
        input_endpoints=(InputEndpoint(name="HttpIn", protocol="http", port=80),),
        sites=(
            Site(
                name="Web",
                physical_directory="site",
                bindings=(Binding(name="Http", endpoint_name="HttpIn"),),
            ),
        ),
    )
    vm = make_vm(role)
    subscriber = """
        from pathlib import Path

        from roles import RoleEnvironment


        @RoleEnvironment.changed.subscribe
        def changed(args):
            Path({out!r}).write_text(RoleEnvironment.get_config_setting("Greeting"))
        """
    vm.write(
        "webrole.py",
        subscriber.format(out=str(vm.disk.approot / "iis.txt"))
        + "\n\n        from roles import RoleEntryPoint\n\n\n        class WebRole(RoleEntryPoint):\n            pass\n",
    )
    vm.write(
        "site/asgi.py",
        subscriber.format(out=str(vm.disk.approot / "w3wp.txt"))
        + """

        async def app(scope, receive, send):
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"ok"})
        """,
    )
    port = free_port()
    config = vm.config(values={"Greeting": "hello"}, endpoints={"HttpIn": ("http", port)})
    async with boot(vm, config) as booted:
        await booted.wait_for("ReadyRole")
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/")).text == "ok"  # W3WP now runs
        new = msgspec.structs.replace(config.environment, settings={"Greeting": "ciao"})
        answer = await booted.ref.ask(
            ApplyEnvironment(environment=new, changes=[Change(kind="setting", name="Greeting")])
        )
        assert answer == "applied"
        assert await wait_text(vm, "iis.txt") == "ciao"
        assert await wait_text(vm, "w3wp.txt") == "ciao"
