"""A hostile instance count against a real `fabric serve`: answered 4xx with one line at once,
the serving process's memory unchanged, nothing created; and the same for a configuration change
of a running deployment."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from fabric.model import build_package
from tests.integration.test_e2e_cli import Output
from tests.paths import EXAMPLES

pytestmark = pytest.mark.timeout(180)

FABRIC = str(Path(sys.executable).with_name("fabric"))
#: Resident memory the serving process may gain while refusing every hostile count (generous:
#: allocator noise and the first requests' imports; building a billion instances took 19 GB).
MAX_GROWTH = 20 * 1024 * 1024
COUNT = '<Instances count="1" />'
HOSTILE = ["1000000000", str(10**30), "-1", "0", "lots", "1e9", "1001"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_hostile_instance_counts_are_refused_at_once_without_growth(tmp_path: Path) -> None:
    state = tmp_path / "state"
    package = tmp_path / "hello.cspkg"
    build_package(EXAMPLES / "hello-worker", package)
    config = (EXAMPLES / "hello-worker" / "ServiceConfiguration.Local.cscfg").read_text()
    assert COUNT in config
    serve = [FABRIC, "serve", "--fast", "--state-dir", str(state)]
    async with await anyio.open_process(serve, stderr=subprocess.STDOUT) as fabric:
        await Output(fabric).wait_for("fabric serving")
        url = (state / "api").read_text().strip()
        token = (state / "token").read_text().strip()
        served = psutil.Process(fabric.pid)
        async with httpx.AsyncClient(
            base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            sub = (await http.get("/subscriptions")).json()["Subscriptions"][0]["SubscriptionId"]
            services = f"/subscriptions/{sub}/services/hostedservices"
            assert (await http.post(services, json={"ServiceName": "big"})).status_code == 201
            slot = f"{services}/big/deploymentslots/production"

            async def deploy(count: str, slot_path: str = slot) -> tuple[httpx.Response, float]:
                body = {
                    "Name": "big",
                    "Package": b64(package.read_bytes()),
                    "Configuration": b64(config.replace(COUNT, f'<Instances count="{count}" />').encode()),
                    "StartDeployment": False,
                }
                started = time.perf_counter()
                response = await http.post(slot_path, json=body)
                return response, time.perf_counter() - started

            await deploy("1")  # a first refusal-free round trip: imports and caches are warm
            assert (await http.delete(slot)).status_code == 202
            with anyio.fail_after(60):
                while (await http.get(slot)).status_code != 404:
                    await anyio.sleep(0.1)
            before = served.memory_info().rss
            for count in HOSTILE:
                response, seconds = await deploy(count)
                assert 400 <= response.status_code < 500, (count, response.text)
                message = response.json()["Error"]["Message"]
                assert "\n" not in message and ("1000" in message or count in message or "number" in message)
                print(f"count={count[:12]}: {response.status_code} in {seconds * 1000:.0f} ms: {message}")
            grown = served.memory_info().rss - before
            assert grown < MAX_GROWTH, f"fabric serve grew {grown / 2**20:.1f} MiB"
            assert (await http.get(slot)).status_code == 404  # nothing was created

            # A running (suspended) deployment: a hostile configuration change changes nothing.
            response, _ = await deploy("1")
            assert response.status_code == 202, response.text
            view = (await http.get(slot)).json()
            for count in HOSTILE:
                changed = config.replace(COUNT, f'<Instances count="{count}" />').encode()
                response = await http.post(
                    slot, params={"comp": "config"}, json={"Configuration": b64(changed)}
                )
                assert 400 <= response.status_code < 500, (count, response.text)
            after = (await http.get(slot)).json()
            assert [i["id"] for i in after["instances"]] == [i["id"] for i in view["instances"]]
            assert served.memory_info().rss - before < MAX_GROWTH

            # The command line says the same in one line, with exit status 2.
            hostile = tmp_path / "ServiceConfiguration.Hostile.cscfg"
            hostile.write_text(config.replace(COUNT, '<Instances count="1000000000" />'))
            command = [FABRIC, "config", str(hostile), "--service", "big", "--state-dir", str(state)]
            result = await anyio.run_process(command, check=False)
            assert result.returncode == 2, result
            err = result.stderr.decode().strip()
            assert len(err.splitlines()) == 1 and "over the limit of 1000" in err, err
            assert (await http.get(slot)).json()["instances"] == after["instances"]
        fabric.terminate()
        with anyio.fail_after(60):
            await fabric.wait()
