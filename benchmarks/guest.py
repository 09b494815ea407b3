"""Guest runtime benchmark: boot to Ready and SIGKILLed role host back to Ready, for one VM.

    .venv/bin/python benchmarks/guest.py [--runs N]

Each figure is printed beside a raw baseline measured in the same run: the time to start a bare
Python interpreter that imports the same libraries (the floor every process in the VM pays).
Settings: the fast profile (durations do not change boot work; restarts of a first crash are
immediate with any settings).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/actors.py is named after the package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import anyio  # noqa: E402
from bench_timing import bare_fork  # noqa: E402

from actors import open_system  # noqa: E402
from fabric.guest.messages import GuestStatus, Heartbeat  # noqa: E402
from fabric.guest.standalone import StatusWatcher, boot_vm, guest_config_for  # noqa: E402
from fabric.model import load_service  # noqa: E402
from fabric.settings import Settings  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello-worker"
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 5
KILLS = 5  # per VM


def python_floor() -> float:
    """A bare interpreter importing what a role host imports, to its exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import anyio, trio, msgspec, actors, roles"], check=True)
    return time.perf_counter() - start


async def one_vm(state: Path, settings: Settings) -> tuple[float, list[float]]:
    """(boot to ReadyRole, [SIGKILLed role host back to ReadyRole ...]) in seconds."""
    service = load_service(EXAMPLE)
    config = guest_config_for(service, "HelloWorker", 0, state, settings)
    statuses: list[tuple[float, str]] = []
    changed = anyio.Event()

    def record(status: GuestStatus) -> None:
        nonlocal changed
        statuses.append((time.perf_counter(), status.status.status))
        changed.set()
        changed = anyio.Event()

    async def ready_after(mark: int) -> float:
        with anyio.fail_after(60):
            while True:
                for at, status in statuses[mark:]:
                    if status == "ReadyRole":
                        return at
                await changed.wait()

    async with open_system() as system:
        watcher = await system.spawn(lambda: StatusWatcher(record), name="watcher")
        start = time.perf_counter()
        vm = await boot_vm(system, config, watcher, settings)
        boot = await ready_after(0) - start
        restarts = []
        for _ in range(KILLS):
            pid = (await vm.ask(Heartbeat(1))).status.role_pid
            mark = len(statuses)
            killed = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            restarts.append(await ready_after(mark) - killed)
            await anyio.sleep(
                settings.role_restart_reset + 0.1
            )  # healthy again: the next kill is a first crash
        await vm.stop()
    return boot, restarts


async def main() -> None:
    settings = Settings.fast(role_restart_reset=0.5)
    floors = [python_floor() for _ in range(RUNS)]
    boots: list[float] = []
    restarts: list[float] = []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            boot, again = await one_vm(Path(tmp), settings)
            boots.append(boot)
            restarts.extend(again)
    floor = statistics.median(floors)
    fork = bare_fork()
    one, five, fifteen = os.getloadavg()
    print(
        f"guest benchmark ({os.cpu_count()} cores, {RUNS} VMs, hello-worker)   [load {one:.2f} {five:.2f} {fifteen:.2f}]"
    )
    print(f"python start + imports (floor):      {floor * 1000:7.0f} ms median")
    print(f"a bare fork of this process:         {fork * 1000:7.2f} ms median")
    print(
        f"boot to ReadyRole:                   {statistics.median(boots) * 1000:7.0f} ms median   ({statistics.median(boots) / floor:4.1f}x the floor; goal < 1000 ms)"
    )
    print(
        f"SIGKILLed role host to ReadyRole:    {statistics.median(restarts) * 1000:7.0f} ms median of {len(restarts)}   ({statistics.median(restarts) / floor:4.2f}x the interpreter floor, {statistics.median(restarts) / fork:4.0f}x a bare fork; goal < 100 ms)"
    )


if __name__ == "__main__":
    anyio.run(main, backend="trio")
