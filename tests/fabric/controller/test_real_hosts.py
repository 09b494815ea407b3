"""The controller with real host agent processes and real VMs: a worker role serving TCP behind
its load balancer, a SIGKILLed host healed onto another, and nothing left behind."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psutil
import pytest

from actors import Ref, command_line, open_system
from fabric.controller import FabricController, ask, wait_operation
from fabric.controller.messages import DeleteDeployment
from fabric.settings import Settings
from tests.fabric.controller.controller_kit import all_ready, answers, config, create, free_port, wait_view

pytestmark = pytest.mark.slow

WORKER = """
import anyio

from roles import RoleEntryPoint, RoleEnvironment


class Echo(RoleEntryPoint):
    async def run(self) -> None:
        me = RoleEnvironment.current_instance
        host, port = me.instance_endpoints["Http"].ip_endpoint

        async def greet(stream):
            async with stream:
                await stream.send(me.id.encode())

        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        await listener.serve(greet)
"""

DEFINITION = """
name = "Demo"
upgrade_domain_count = 2

[[roles]]
name = "{role}"
kind = "worker"
vm_size = "Small"

[[roles.settings]]
name = "Greeting"

[[roles.input_endpoints]]
name = "Http"
protocol = "tcp"
port = {port}

[roles.runtime.entry_point.netfx]
assembly_name = "worker.py"
"""


def echo_service(root: Path, port: int) -> Path:
    """A one-role service whose instances answer their id on their Http endpoint."""
    root.mkdir(parents=True)
    (root / "Front").mkdir()
    (root / "Front" / "worker.py").write_text(WORKER)
    (root / "service.toml").write_text(DEFINITION.format(role="Front", port=port))
    text = config(front=2).decode()
    (root / "config.toml").write_text(text[: text.index('[[roles]]\nname = "Back"')])
    return root


@asynccontextmanager
async def real_controller(state_dir: Path) -> AsyncIterator[Ref]:
    """A controller with its default host factory: real host agent processes."""
    settings = Settings.fast(max_hosts=3, host_cores=1, host_failure_timeout=2.0)
    async with open_system() as system:
        yield await system.spawn(lambda: FabricController(state_dir, settings), name="controller")


def host_pids() -> list[int]:
    """The host agent processes (children of this process)."""
    pids = []
    for child in psutil.Process().children():
        try:
            if "actors._child" in command_line(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:  # a short-lived child (an nft run of the balancer) ended meanwhile
            continue
    return pids


@pytest.mark.timeout(90)
async def test_real_hosts_serve_heal_and_leave_nothing(tmp_path: Path) -> None:
    folder = echo_service(tmp_path / "echo", free_port())
    async with real_controller(tmp_path / "state") as ref:
        configuration = (folder / "config.toml").read_bytes()
        assert (await create(ref, folder, configuration=configuration)).status == "Succeeded"
        v = await wait_view(ref, all_ready, timeout=60)
        port = v.endpoints[0].port
        assert len({i.host for i in v.instances}) == 2  # one core per host: one instance each
        with anyio.fail_after(20):
            while await answers(port) != {"Front_IN_0", "Front_IN_1"}:
                await anyio.sleep(0.1)
        # Kill the host of Front_IN_1 (and so its VM): the instance comes back on a third host.
        victim = next(i for i in v.instances if i.id == "Front_IN_1")
        pids = host_pids()
        assert len(pids) == 2
        logs = tmp_path / "state" / "hosts" / victim.host / "host.out.log"
        assert logs.exists()
        hosts = {p: psutil.Process(p) for p in pids}
        [victim_pid] = [
            p for p, proc in hosts.items() if victim.host in str(proc.environ().get("_", "")) or True
        ][:1]
        os.kill(_host_pid(tmp_path / "state", victim.host, pids), signal.SIGKILL)
        del victim_pid
        healed = await wait_view(
            ref, lambda v: all_ready(v) and all(i.host != victim.host for i in v.instances), timeout=60
        )
        assert next(i for i in healed.instances if i.id == "Front_IN_1").restarts >= 1
        with anyio.fail_after(20):
            while await answers(port) != {"Front_IN_0", "Front_IN_1"}:
                await anyio.sleep(0.1)
        done = await ask(ref, DeleteDeployment(service="demo", slot="production"))
        assert (await wait_operation(ref, done.request_id, timeout=60)).status == "Succeeded"
        assert not any((tmp_path / "state" / "vms").iterdir())  # every VM disk was deleted


def _host_pid(state: Path, host_id: str, pids: list[int]) -> int:
    """Which of ``pids`` is the host agent of ``host_id`` (its log names its pid)."""
    log = (state / "hosts" / host_id / "HostAgent.log").read_text()
    for pid in pids:
        if f"pid {pid}" in log:
            return pid
    raise AssertionError(f"no pid of {host_id} in {pids}")
