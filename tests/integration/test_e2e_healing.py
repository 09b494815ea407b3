"""End to end, real processes: the watchdog, service healing and a Manual upgrade under load."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import httpx
import pytest

from fabric.model import build_package
from fabric.settings import Settings
from tests.integration.e2e_kit import copy_service, descendants_named, running_fabric, vm_process
from tests.paths import EXAMPLES

pytestmark = pytest.mark.timeout(180)


async def test_a_hung_guest_agent_gets_its_guest_os_restarted_by_the_watchdog(tmp_path: Path) -> None:
    settings = Settings.fast(guest_heartbeat_interval=0.3, guest_heartbeat_timeout=3.0)
    async with running_fabric(tmp_path, settings) as fab:
        await fab.deploy(copy_service(EXAMPLES / "hello-worker", tmp_path, count=1))
        await fab.all_ready("helloworker", 1)
        hung = vm_process("HelloWorker_IN_0")
        hung.send_signal(signal.SIGSTOP)  # the guest agent stops answering heartbeats
        seen: set[str] = set()

        async def restarted() -> bool:
            (instance,) = await fab.instances("helloworker")
            seen.add(instance.status)
            try:
                return instance.status == "ReadyRole" and vm_process("HelloWorker_IN_0").pid != hung.pid
            except LookupError:
                return False

        try:
            await fab.wait_until(restarted, 60)
        finally:
            if hung.is_running():
                hung.send_signal(signal.SIGCONT)
        assert "RoleStateUnknown" in seen  # the host could not see it for a while
        assert not hung.is_running() or hung.status() == "zombie"  # the whole guest OS was restarted
        (instance,) = await fab.instances("helloworker")
        assert instance.restarts == 1  # the role host started again, in the restarted guest OS


async def test_a_killed_host_process_heals_onto_another_host(tmp_path: Path) -> None:
    settings = Settings.fast(host_failure_timeout=2.0, host_cores=2)
    async with running_fabric(tmp_path, settings) as fab:
        await fab.deploy(copy_service(EXAMPLES / "hello-worker", tmp_path, count=2))
        before = {i.id: i.host for i in await fab.all_ready("helloworker", 2)}
        victim_host = before["HelloWorker_IN_0"]
        (host_process,) = descendants_named(f"host:{victim_host}")
        host_process.kill()

        async def healed() -> bool:
            instances = await fab.instances("helloworker")
            return all(i.status == "ReadyRole" for i in instances) and all(
                i.host != victim_host for i in instances if before[i.id] == victim_host
            )

        await fab.wait_until(healed, 90)
        after = {i.id: i.host for i in await fab.instances("helloworker")}
        assert after["HelloWorker_IN_0"] != victim_host


async def test_a_manual_upgrade_walked_domain_by_domain_keeps_the_site_answering(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        await fab.deploy(EXAMPLES / "hwc-wsgi")
        await fab.all_ready("hellowsgi", 2)
        url = await fab.public_url("hellowsgi")
        new = copy_service(EXAMPLES / "hwc-wsgi", tmp_path)
        (new / "Hello" / "wsgi.py").write_text(
            (new / "Hello" / "wsgi.py").read_text().replace('body = f"', 'body = f"v2 ')
        )
        package = tmp_path / "v2.cspkg"
        build_package(new, package)
        outcomes = {"ok": 0, "failed": 0}
        versions: list[str] = []
        async with anyio.create_task_group() as tg:

            async def load() -> None:
                while True:
                    try:
                        async with httpx.AsyncClient(timeout=3) as client:
                            response = await client.get(url)
                        outcomes["ok" if response.status_code == 200 else "failed"] += 1
                        versions.append("v2" if response.text.startswith("v2") else "v1")
                    except httpx.HTTPError:
                        outcomes["failed"] += 1
                    await anyio.sleep(0.01)

            tg.start_soon(load)
            data = package.read_bytes()
            await fab.call(lambda c: c.upgrade("hellowsgi", "production", data, mode="Manual"))
            for domain in (0, 1):
                await fab.call(lambda c, d=domain: c.walk("hellowsgi", "production", d))
                instances = await fab.all_ready("hellowsgi", 2)
                assert {i.update_domain for i in instances} == {0, 1}
            # The load asks one request at a time: the second answer from now was asked after
            # the upgrade finished.
            finished = len(versions)
            await fab.wait_until(lambda: len(versions) >= finished + 2, 30)
            tg.cancel_scope.cancel()
        total = outcomes["ok"] + outcomes["failed"]
        assert total > 20
        assert outcomes["failed"] <= total * 0.01, outcomes  # the site answered throughout
        assert versions[0] == "v1" and versions[-1] == "v2"
