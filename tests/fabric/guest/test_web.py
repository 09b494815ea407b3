"""Web roles under the bootstrapper: IISConfigurator, W3WP on the first request, HWC, logs."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import anyio
import httpx
import psutil
import pytest

from fabric.guest.web_configurator import application_host_config
from fabric.model.definition import Binding, InputEndpoint, RoleDefinition, Site
from tests.fabric.guest.guest_kit import VM_UID, Vm, boot, free_port, wait_gone

pytestmark = pytest.mark.timeout(30)

MakeVm = Callable[[RoleDefinition], Vm]

ASGI_SITE = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"hello from {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"""

WSGI_SITE = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hwc says hi"]
"""

HTTP = InputEndpoint(name="HttpIn", protocol="http", port=80)
#: a full IIS web role with one site, from the role's "site" folder, bound to HttpIn
FULL_WEB_ROLE = RoleDefinition(
    name="Web",
    kind="web",
    input_endpoints=(HTTP,),
    sites=(
        Site(name="Web", physical_directory="site", bindings=(Binding(name="Http", endpoint_name="HttpIn"),)),
    ),
)


def role_processes(bootstrapper: psutil.Process) -> list[psutil.Process]:
    """Process actors under the bootstrapper: role hosts and web workers."""
    return [p for p in bootstrapper.children(recursive=True) if "actors._child" in " ".join(p.cmdline())]


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        return await http.get(url)


async def wait_log_line(vm: Vm, needle: str) -> str:
    """The W3C logs' text once it holds ``needle`` (workers flush every second)."""
    with anyio.fail_after(10):
        while True:
            text = "".join(p.read_text() for p in sorted(vm.disk.iis_log_dir.glob("u_ex*.log")))
            if needle in text:
                return text
            await anyio.sleep(0.05)


async def test_a_full_iis_role_serves_through_w3wp_started_on_the_first_request(make_vm: MakeVm) -> None:
    vm = make_vm(FULL_WEB_ROLE)
    vm.write("site/asgi.py", ASGI_SITE)
    port = free_port()
    async with boot(vm, vm.config(endpoints={"HttpIn": ("http", port)})) as booted:
        ready = await booted.wait_for("ReadyRole")
        bootstrapper = psutil.Process(booted.ref.pid)
        assert [p.pid for p in role_processes(bootstrapper)] == [ready.role_pid]  # WaIISHost, no W3WP yet
        response = await get(f"http://127.0.0.1:{port}/orders")
        assert response.status_code == 200 and response.text == "hello from /orders"
        workers = [p for p in role_processes(bootstrapper) if p.pid != ready.role_pid]
        assert len(workers) == 1
        text = await wait_log_line(vm, "/orders")
        assert "#Fields: date time s-sitename" in text and "GET /orders" in text
        # a dead worker is replaced on the next request
        os.kill(workers[0].pid, signal.SIGKILL)
        await wait_gone(workers[0].pid)
        response = await get(f"http://127.0.0.1:{port}/again")
        assert response.text == "hello from /again"
        replaced = [p for p in role_processes(bootstrapper) if p.pid != ready.role_pid]
        assert [p.pid for p in replaced] != [workers[0].pid] and len(replaced) == 1
        assert booted.last.status == "ReadyRole"
    site_root = vm.disk.site_root(0)
    assert (site_root / "asgi.py").exists()
    configurator = vm.disk.role_log("IISConfigurator.log").read_text()
    for line in ("cleanup for role Web", "no stale configuration", "app pool", "site Web"):
        assert line in configurator
    config = application_host_config(vm.disk).read_text()
    assert f'bindingInformation="127.0.0.1:{port}:"' in config and str(site_root) in config
    assert (vm.disk.role_resources / "WaIISHost.log").exists()
    log = vm.disk.bootstrapper_log.read_text()
    assert log.index("IISConfigurator cleanup exited with code 0") < log.index("the startup tasks are done")
    assert log.index("IISConfigurator configure exited with code 0") < log.index("started WaIISHost")
    assert log.count("started W3WP") == 2


async def test_a_second_boot_replaces_the_stale_site_configuration(make_vm: MakeVm) -> None:
    role = RoleDefinition(
        name="Web",
        kind="web",
        input_endpoints=(HTTP,),
        sites=(Site(name="Web", bindings=(Binding(name="Http", endpoint_name="HttpIn"),)),),
    )
    vm = make_vm(role)
    vm.write("asgi.py", ASGI_SITE)
    for _ in range(2):
        async with boot(vm, vm.config(endpoints={"HttpIn": ("http", free_port())})) as booted:
            await booted.wait_for("ReadyRole")
    config = application_host_config(vm.disk).read_text()
    assert config.count("<site ") == 1
    assert "deleted site Web_IN_0_Web" in vm.disk.role_log("IISConfigurator.log").read_text()


async def test_a_site_folder_that_does_not_exist_blocks_the_instance(make_vm: MakeVm) -> None:
    role = RoleDefinition(
        name="Web",
        kind="web",
        input_endpoints=(HTTP,),
        sites=(
            Site(
                name="Web",
                physical_directory="missing",
                bindings=(Binding(name="Http", endpoint_name="HttpIn"),),
            ),
        ),
    )
    vm = make_vm(role)
    async with boot(vm, vm.config(endpoints={"HttpIn": ("http", free_port())})) as booted:
        failed = await booted.wait_for("FailedStartingRole")
    assert "IISConfigurator configure exited with code 1" in failed.detail
    assert "'missing'" in failed.detail and "IISConfigurator.log" in failed.detail


async def test_an_hwc_web_role_serves_from_the_role_host_itself(make_vm: MakeVm) -> None:
    vm = make_vm(RoleDefinition(name="Web", kind="web", input_endpoints=(HTTP,)))
    vm.write("wsgi.py", WSGI_SITE)
    port = free_port()
    async with boot(vm, vm.config(endpoints={"HttpIn": ("http", port)})) as booted:
        ready = await booted.wait_for("ReadyRole")
        response = await get(f"http://127.0.0.1:{port}/")
        assert response.text == "hwc says hi"
        assert [p.pid for p in role_processes(psutil.Process(booted.ref.pid))] == [ready.role_pid]
        await wait_log_line(vm, "GET / ")
    assert not vm.disk.role_log("IISConfigurator.log").exists()
    assert (vm.disk.role_resources / "WaWebHost.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_a_limited_web_role_serves_and_logs_as_the_vms_account(make_vm: MakeVm) -> None:
    vm = make_vm(FULL_WEB_ROLE)
    vm.write("site/asgi.py", ASGI_SITE)
    port = free_port()
    async with boot(vm, vm.config(endpoints={"HttpIn": ("http", port)}, vm_uid=VM_UID)) as booted:
        ready = await booted.wait_for("ReadyRole")
        assert (await get(f"http://127.0.0.1:{port}/limited")).text == "hello from /limited"
        processes = role_processes(psutil.Process(booted.ref.pid))
        assert {p.uids().real for p in processes} == {VM_UID} and len(processes) == 2
        assert psutil.Process(ready.role_pid).uids().real == VM_UID
        await wait_log_line(vm, "/limited")
