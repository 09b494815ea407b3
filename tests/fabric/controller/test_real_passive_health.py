"""Real hosts and VMs: a worker role that opens its listener some time after ReadyRole is
"refusing" (not exiled), and when the other instance's role host is SIGKILLed, no client
connection through the load balancer fails."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from fabric.controller import ask, wait_operation
from fabric.controller.messages import DeleteDeployment, DeploymentView
from tests.fabric.controller.controller_kit import all_ready, create, fetch, free_port, view, wait_view
from tests.fabric.controller.test_real_hosts import echo_service, real_controller
from tests.integration.e2e_kit import role_host_of

pytestmark = pytest.mark.slow

# Front_IN_1 opens its listener in run() (after ReadyRole), once the test drops a file named
# "open" beside the role's code; Front_IN_0 listens at once.
LATE_WORKER = """
from pathlib import Path

import anyio

from roles import RoleEntryPoint, RoleEnvironment


class Late(RoleEntryPoint):
    async def run(self) -> None:
        me = RoleEnvironment.current_instance
        host, port = me.instance_endpoints["Http"].ip_endpoint
        if me.id == "Front_IN_1":
            gate = Path(__file__).resolve().parent / "open"
            while not gate.exists():
                await anyio.sleep(0.02)

        async def greet(stream):
            async with stream:
                await stream.send(me.id.encode())

        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        await listener.serve(greet)
"""


def late_service(root: Path, port: int) -> Path:
    """The echo service of test_real_hosts, its instance Front_IN_1 listening late."""
    folder = echo_service(root, port)
    (folder / "Front" / "worker.py").write_text(LATE_WORKER)
    return folder


def refusing(v: DeploymentView) -> dict[str, list[str]]:
    return {i.id: i.refusing for i in v.instances if i.refusing}


async def listens(port: int) -> bool:
    try:
        stream = await anyio.connect_tcp("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


@pytest.mark.timeout(120)
async def test_a_late_listener_is_refusing_and_a_killed_role_host_fails_no_client(tmp_path: Path) -> None:
    folder = late_service(tmp_path / "late", free_port())
    state = tmp_path / "state"
    async with real_controller(state) as ref:
        configuration = (folder / "config.toml").read_bytes()
        assert (await create(ref, folder, configuration=configuration)).status == "Succeeded"
        v = await wait_view(ref, all_ready, timeout=60)
        port = v.endpoints[0].port
        local = {i.id: int(i.endpoints["Http"].split(":")[1]) for i in v.instances}
        with anyio.fail_after(20):
            while not await listens(local["Front_IN_0"]):
                await anyio.sleep(0.05)
        # Both Ready, one not listening: every client is served, by Front_IN_0.
        assert {await fetch(port) for _ in range(6)} == {"Front_IN_0"}
        assert refusing(await view(ref)) == {"Front_IN_1": ["Http"]}
        [approot] = state.glob("vms/*Front_IN_1/E/approot")
        (approot / "open").write_text("")
        with anyio.fail_after(20):
            while not await listens(local["Front_IN_1"]):
                await anyio.sleep(0.05)
        # Front_IN_1 listens now but is still marked refusing (its trial is not due yet) when
        # Front_IN_0's role host dies: it is tried anyway, and no client sees a failure.
        # (Once it is gone: a connection that reached it just before it died dies with it.)
        victim = role_host_of("Front_IN_0", "WaWorkerHost")
        os.kill(victim.pid, signal.SIGKILL)
        await anyio.to_thread.run_sync(victim.wait, 20)
        served = [await fetch(port) for _ in range(25)]
        assert "" not in served and "Front_IN_1" in served
        with anyio.fail_after(30):
            while refusing(await view(ref)) or {await fetch(port) for _ in range(4)} != {
                "Front_IN_0",
                "Front_IN_1",
            }:
                await anyio.sleep(0.05)
        done = await ask(ref, DeleteDeployment(service="demo", slot="production"))
        assert (await wait_operation(ref, done.request_id, timeout=60)).status == "Succeeded"
