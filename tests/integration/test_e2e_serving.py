"""End to end, real processes: the examples serve through the load balancer, heal, scale and
take configuration changes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import httpx
import pytest

from fabric.guest.disk import VmDisk
from tests.integration.e2e_kit import (
    SERVICES,
    Running,
    copy_service,
    descendants_named,
    get,
    role_host_of,
    running_fabric,
)
from tests.paths import EXAMPLES

pytestmark = pytest.mark.timeout(180)


async def test_guestbook_and_the_hwc_role_serve_through_the_load_balancer(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        await fab.deploy(EXAMPLES / "guestbook")
        await fab.deploy(EXAMPLES / "hwc-wsgi")
        await fab.all_ready("guestbook", 4)
        await fab.all_ready("hellowsgi", 2)
        book = await fab.public_url("guestbook")
        async with httpx.AsyncClient(timeout=5) as client:
            signed = await client.post(book + "sign", data={"entry": "hello from the test"})
            assert signed.status_code == 303
            served_by = set()
            for _ in range(6):  # a new connection each time: the balancer spreads connections
                page = await get(book)
                assert page.status_code == 200 and "hello from the test" in page.text
                served_by.add(page.text.split("served by ")[1].split("<")[0])
            assert served_by == {"Web_IN_0", "Web_IN_1"}  # spread over both instances
            hello = await client.get(await fab.public_url("hellowsgi"))
            assert hello.status_code == 200 and hello.text.startswith("Hello from a WSGI app in WaWebHost")


async def test_a_sigkilled_role_host_leaves_rotation_and_returns(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        await fab.deploy(EXAMPLES / "hwc-wsgi")
        await fab.all_ready("hellowsgi", 2)
        url = await fab.public_url("hellowsgi")
        victim = role_host_of("Hello_IN_0", "WaWebHost")
        failures = 0
        requests = 0
        os.kill(victim.pid, signal.SIGKILL)

        async def left_rotation() -> bool:
            # A host forked from its template may be back before a poll sees it gone: then
            # its restart is counted already.
            return any(i.status != "ReadyRole" or i.restarts for i in await fab.instances("hellowsgi"))

        async with anyio.create_task_group() as tg:

            async def load() -> None:
                nonlocal failures, requests
                async with httpx.AsyncClient(timeout=2) as client:
                    while True:
                        requests += 1
                        try:
                            if (await client.get(url)).status_code != 200:
                                failures += 1
                        except httpx.HTTPError:
                            failures += 1
                        await anyio.sleep(0.01)

            tg.start_soon(load)
            await fab.wait_until(left_rotation, 30)  # pushed up at once, not at the next heartbeat
            back = await fab.all_ready("hellowsgi", 2, seconds=60)
            with anyio.fail_after(30):  # a role host forked from its template is back in ~50 ms
                while requests <= 10:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert sum(i.restarts for i in back) >= 1
        assert victim.pid not in [p.pid for p in descendants_named("WaWebHost")]
        assert requests > 10 and failures <= requests * 0.01  # the other instance kept serving


async def test_scaling_up_and_down(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        service = copy_service(EXAMPLES / "hello-worker", tmp_path, count=1)
        await fab.deploy(service)
        await fab.all_ready("helloworker", 1)
        for count in (3, 1):
            config = (
                copy_service(EXAMPLES / "hello-worker", tmp_path, count=count)
                / "ServiceConfiguration.Local.cscfg"
            )
            data = config.read_bytes()
            await fab.call(
                lambda c, data=data: c.change_configuration(
                    "helloworker", "production", data, "ServiceConfiguration.Local.cscfg"
                )
            )
            instances = await fab.all_ready("helloworker", count)
            assert [i.id for i in instances] == [f"HelloWorker_IN_{n}" for n in range(count)]
        assert len(descendants_named("WaWorkerHost")) == 1


async def test_a_settings_change_raises_changing_and_changed(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        await fab.deploy(SERVICES / "probe")
        await fab.all_ready("probe", 1)
        events = _events_file(fab)
        assert events.read_text().splitlines() == ["start blue"]
        green = copy_service(SERVICES / "probe", tmp_path, replace={'value="blue"': 'value="green"'})
        await fab.call(
            lambda c: c.change_configuration(
                "probe",
                "production",
                (green / "ServiceConfiguration.Local.cscfg").read_bytes(),
                "ServiceConfiguration.Local.cscfg",
            )
        )
        await fab.wait_until(lambda: "changed green" in events.read_text(), 30)
        assert events.read_text().splitlines() == ["start blue", "changing Color", "changed green"]
        assert (await fab.instances("probe"))[0].restarts == 0  # applied in place, no recycle


def _events_file(fab: Running) -> Path:
    vm = next((fab.state_dir / "vms").iterdir())
    disk = VmDisk(vm, "", "Probe", "")
    folders = list(disk.resources.glob("*.Probe.Events"))
    assert len(folders) == 1, folders
    return folders[0] / "events.log"


async def test_an_unauthenticated_request_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        response = await get(fab.fabric.url.rstrip("/") + "/subscriptions")
        assert response.status_code == 401
        async with httpx.AsyncClient(timeout=5) as client:
            wrong = await client.delete(
                fab.fabric.url.rstrip("/") + "/subscriptions/x/services/hostedservices/nothing",
                headers={"Authorization": "Bearer not-the-token"},
            )
        assert wrong.status_code == 401
        assert await fab.views() == []
