"""Plugins (seed H): each Import expands into an agent and a /blockStartup task; the agents' work."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import psutil
import pytest

from fabric.model.definition import Import, RoleDefinition, StartupTask
from tests.fabric.guest.guest_kit import WORKER, Vm, boot, wait_gone

pytestmark = pytest.mark.timeout(30)

MakeVm = Callable[[RoleDefinition], Vm]
RA = "Microsoft.WindowsAzure.Plugins.RemoteAccess."

CHECKING_WORKER = """
from pathlib import Path

from roles import RoleEntryPoint

STORE = Path({store!r})


class Worker(RoleEntryPoint):
    def on_start(self):
        # The agents must have initialised before the role process starts.
        for marker in ("Diagnostics/agent.json", "RemoteAccess/RemoteAccess.json"):
            if not (STORE / marker).exists():
                raise RuntimeError(f"{{marker}} is missing: the role started too early")
        return True

    async def run(self):
        import anyio
        await anyio.sleep_forever()
"""


def plugin_role() -> RoleDefinition:
    return RoleDefinition(
        name="Worker",
        kind="worker",
        imports=(Import(module_name="Diagnostics"), Import(module_name="RemoteAccess")),
        startup=(StartupTask(command_line="echo own task"),),
    )


async def test_each_plugin_expands_into_an_agent_and_a_block_startup_task_before_the_role(
    make_vm: MakeVm,
) -> None:
    vm = make_vm(plugin_role())
    vm.write("worker.py", CHECKING_WORKER.format(store=str(vm.disk.diagnostic_store)))
    values = {
        f"{RA}Enabled": "true",
        f"{RA}AccountUsername": "operator",
        f"{RA}AccountEncryptedPassword": "MIIB...",
    }
    async with boot(vm, vm.config(values=values)) as booted:
        await booted.wait_for("ReadyRole")
        # A forked role host can report ready before its spawn returns and is logged as started.
        log = await booted.wait_for_log("started WaWorkerHost")
        agents = [
            json.loads((vm.disk.diagnostic_store / name).read_text())
            for name in ("Diagnostics/agent.json", "RemoteAccess/RemoteAccess.json")
        ]
        assert all(psutil.pid_exists(agent["pid"]) for agent in agents)  # still running beside the role
    order = [
        "started task 0 (background, elevated, Diagnostics plugin)",
        "started task 1 (simple, elevated, Diagnostics plugin)",
        "task 1 (simple, elevated, Diagnostics plugin)",  # ... exited with code 0
        "started task 2 (background, elevated, RemoteAccess plugin)",
        "started task 3 (simple, elevated, RemoteAccess plugin)",
        "started task 4 (simple, limited) 'echo own task'",
        "started WaWorkerHost",
    ]
    positions = [log.index(line) for line in order]
    assert positions == sorted(positions)
    assert "/blockStartup" in log
    for index in (1, 3):
        assert "Diagnostics plugin) " in log and f"task {index} (simple, elevated," in log
        block = (vm.disk.diagnostic_store / "StartupTasks" / f"{index}.log").read_text()
        assert "agent is ready" in block
    remote = agents[1]["settings"]
    assert remote == {"AccountEncryptedPassword": "(set)", "AccountUsername": "operator", "Enabled": "true"}
    for agent in agents:
        await wait_gone(agent["pid"])


async def test_the_diagnostics_agent_samples_role_processes_and_copies_logs(make_vm: MakeVm) -> None:
    vm = make_vm(RoleDefinition(name="Worker", kind="worker", imports=(Import(module_name="Diagnostics"),)))
    vm.write(
        "worker.py",
        """
        from roles import RoleEntryPoint


        class Worker(RoleEntryPoint):
            async def run(self):
                import anyio
                await anyio.sleep_forever()
        """,
    )
    folder = vm.disk.diagnostic_store / "Diagnostics"
    async with boot(vm, vm.config()) as booted:
        ready = await booted.wait_for("ReadyRole")
        samples = folder / "PerformanceCounters.jsonl"
        with anyio.fail_after(10):
            while True:
                records = [json.loads(line) for line in _lines(samples)]
                mine = [r for r in records if r["pid"] == ready.role_pid]
                if mine and (folder / "Logs" / "WaWorkerHost.log").exists():
                    break
                await anyio.sleep(0.05)
    assert mine[0]["rss_bytes"] > 1_000_000 and mine[0]["cpu_percent"] >= 0.0
    assert "actors._child" in mine[0]["command"]
    assert "WaWorkerHost" in (folder / "Logs" / "WaWorkerHost.log").read_text()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_block_startup_fails_when_the_agent_never_initialises(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fabric.guest.plugin_agents.diagnostics",
            "/blockStartup",
            "--plugin",
            "Diagnostics",
            "--ready",
            str(tmp_path / "nobody.sock"),
            "--timeout",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert "Diagnostics agent did not initialise within 0.3 s" in result.stderr


async def test_plugin_sockets_live_in_the_vms_folder_and_a_killed_runs_are_swept(make_vm: MakeVm) -> None:
    vm = make_vm(RoleDefinition(name="Worker", kind="worker", imports=(Import(module_name="Diagnostics"),)))
    vm.write("worker.py", WORKER)
    stale = vm.disk.runtime_dir / "Diagnostics.sock"
    stale.parent.mkdir(parents=True)
    stale.write_text("left by a bootstrapper that was SIGKILLed")
    before = set(Path("/tmp").glob("reddog-*"))
    async with boot(vm, vm.config()) as booted:
        await booted.wait_for("ReadyRole")
        assert stale.is_socket()  # the agent's own, in place of the stale file
        assert (vm.disk.runtime_dir.stat().st_mode & 0o777) == 0o700
        assert set(Path("/tmp").glob("reddog-*")) <= before
    assert set(Path("/tmp").glob("reddog-*")) <= before


async def test_an_agent_and_its_block_startup_task_meet_on_a_socket_deeper_than_an_address_holds(
    tmp_path: Path,
) -> None:
    from fabric.guest.plugin_agents._ready import serve_ready, wait_ready

    ready = tmp_path / ("a" * 60) / ("b" * 60) / "Diagnostics.sock"  # sun_path holds 108 bytes
    ready.parent.mkdir(parents=True)
    async with anyio.create_task_group() as tg:
        await tg.start(lambda task_status: serve_ready(ready, dict, task_status=task_status))
        assert ready.is_socket()
        assert await wait_ready("Diagnostics", ready, 10) == 0
        tg.cancel_scope.cancel()
