"""Heal benchmark: a SIGKILLed role host serving again through the load balancer, step by step.

    .venv/bin/python benchmarks/heal.py [--kills N]

One instance of examples/hwc-wsgi (a web role: WaWebHost serves the site) runs in a fabric in
this process, fast settings, the load balancer on its default data path (the kernel's as root
with nft). Each round SIGKILLs the role host and polls the endpoint through the balancer until
a request is answered 200; the clock stops at that answer (that the answer came from a new role
host is checked after). Between rounds the role is left healthy for role_restart_reset, so every
kill is a first crash (restarted at once, no backoff).

Each step is timed from the one before, from the logs each process writes (ms resolution) and
two hooks in this process (the balancer's status update, nft's runs). The way to the first
answer:

- death noticed: the bootstrapper logs the role host's exit (its pidfd is readable);
- role host up: the new process's first log line (template fork, actor runtime, the actor built);
- on_start called: the role's code loaded;
- ready (role host): on_start returned and the sites serve;
- first 200: the first answer through the balancer. The bootstrapper holds the site's listening
  socket, so a connection the kernel path sent before the instance left rotation waits in its
  backlog and is served as soon as the sites serve; one the user-space path holds waits for
  "in rotation".

Beside it, the status on its way up: ready at the bootstrapper, at the host agent, in rotation
(the balancer told the instance is Ready: clients waiting in user space go at once), and the
kernel rules (the kernel path's nft run after that update; new connections take the user-space
path meanwhile).

Baselines in the same run: a bare fork of this process (the floor of any fork-based start) and a
bare interpreter importing the runtime (what an exec'd role host would pay first).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# benchmarks/actors.py is named after the package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import anyio  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402
from bench_timing import bare_fork, load_average  # noqa: E402

from actors import command_line  # noqa: E402
from fabric.client import AsyncFabricClient  # noqa: E402
from fabric.client.deployments import deploy_service  # noqa: E402
from fabric.controller.messages import ListDeployments  # noqa: E402
from fabric.network import _nft  # noqa: E402
from fabric.network.load_balancer import LoadBalancer  # noqa: E402
from fabric.server import open_fabric  # noqa: E402
from fabric.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KILLS = int(sys.argv[sys.argv.index("--kills") + 1]) if "--kills" in sys.argv else 21
HOST = "WaWebHost"
#: (step, log file, what its line says), in the order they happen
LOG_STEPS: list[tuple[str, str, str]] = [
    ("death noticed", "WaHostBootstrapper.log", "killed by SIGKILL"),
    ("role host up", f"{HOST}.log", f"{HOST} starting (pid"),
    ("on_start called", f"{HOST}.log", "calling on_start"),
    ("ready (role host)", f"{HOST}.log", "INFO ready"),
    ("ready (bootstrapper)", "WaHostBootstrapper.log", "status ReadyRole"),
    ("ready (host agent)", "HostAgent.log", ": ReadyRole"),
]
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)[.,](\d{3})")


def bare_interpreter(runs: int = 5) -> float:
    """Median seconds to start an interpreter that imports the actor runtime, to its exit."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import anyio, trio, msgspec, actors"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def role_host_pids() -> list[int]:
    """Pids of the role host processes among our descendants (actors carry their name on argv)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if command_line(proc.cmdline())[6:7] == [HOST]:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def _stamp(line: str) -> float | None:
    """The wall-clock time of a log line (the fabric's logs and a role host's: local time)."""
    m = _STAMP.match(line)
    if m is None:
        return None
    when = dt.datetime.strptime(f"{m[1]} {m[2]}.{m[3]}", "%Y-%m-%d %H:%M:%S.%f")
    if "T" in line[:11]:  # the fabric's own logs are UTC, with a T
        return when.replace(tzinfo=dt.UTC).timestamp()
    return when.timestamp()


def log_times(state: Path, since: float) -> dict[str, float]:
    """The first time each LOG_STEPS line was written at or after ``since`` (and after the
    step before it)."""
    lines: dict[str, list[tuple[float, str]]] = {}
    for _, name, _ in LOG_STEPS:
        if name in lines:
            continue
        found = []
        for path in state.rglob(name):
            for line in path.read_text(errors="replace").splitlines():
                at = _stamp(line)
                # ms resolution: a line may be stamped up to 1 ms before an event it follows
                if at is not None and at >= since - 0.001:
                    found.append((at, line))
        lines[name] = sorted(found)
    times: dict[str, float] = {}
    after = since - 0.001
    for step, name, text in LOG_STEPS:
        at = next((t for t, line in lines[name] if t >= after and text in line), None)
        if at is None:
            break
        times[step] = after = at
    return times


class Hooks:
    """Wall-clock times of the balancer's Ready updates and of nft's runs in this process."""

    def __init__(self) -> None:
        self.ready: list[float] = []
        self.nft_done: list[float] = []

    def install(self) -> Callable[[], None]:
        update, run = LoadBalancer.update, _nft.run
        hooks = self

        def timed_update(lb: LoadBalancer, instance_id: str, **kw: Any) -> None:
            update(lb, instance_id, **kw)
            if kw.get("ready"):
                hooks.ready.append(time.time())

        async def timed_run(script: str) -> None:
            await run(script)
            hooks.nft_done.append(time.time())

        LoadBalancer.update = timed_update  # type: ignore[method-assign,assignment]
        _nft.run = timed_run

        def uninstall() -> None:
            LoadBalancer.update = update  # type: ignore[method-assign]
            _nft.run = run

        return uninstall


async def heal_rounds(tmp: Path, settings: Settings) -> list[dict[str, float]]:
    """One dict per kill: each step's time since the kill, in seconds ("first 200" included)."""
    service = tmp / "hwc-wsgi"
    shutil.copytree(ROOT / "examples" / "hwc-wsgi", service)
    cscfg = service / "ServiceConfiguration.Local.cscfg"
    cscfg.write_text(re.sub(r'<Instances count="\d+"', '<Instances count="1"', cscfg.read_text()))
    hooks = Hooks()
    uninstall = hooks.install()
    rounds = []
    try:
        async with open_fabric(tmp / "state", settings) as fabric:
            async with AsyncFabricClient(fabric.state_dir) as api:
                await deploy_service(api, service, None, wait=True)
            with anyio.fail_after(120):
                while True:
                    views = await fabric.controller.ask(ListDeployments())
                    if views and views[0].instances and views[0].instances[0].status == "ReadyRole":
                        break
                    await anyio.sleep(0.05)
            url = f"http://127.0.0.1:{views[0].endpoints[0].port}/"
            async with httpx.AsyncClient(timeout=2.0) as client:
                for _ in range(KILLS):
                    rounds.append(await one_kill(client, url, fabric.state_dir, hooks))
                    await anyio.sleep(settings.role_restart_reset + 0.1)
    finally:
        uninstall()
    return rounds


async def one_kill(client: httpx.AsyncClient, url: str, state: Path, hooks: Hooks) -> dict[str, float]:
    (pid,) = role_host_pids()
    hooks.ready.clear()
    hooks.nft_done.clear()
    killed_at, start = time.time(), time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    with anyio.fail_after(60):
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # the kept-alive connection died with the host: the next one waits in line
            await anyio.sleep(0.002)
    healed = time.perf_counter() - start
    if pid in role_host_pids():
        raise RuntimeError(f"the killed role host {pid} still runs")
    await anyio.sleep(0.2)  # the logs and the kernel rules catch up
    times = {step: at - killed_at for step, at in log_times(state, killed_at).items()}
    if hooks.ready:
        times["in rotation"] = hooks.ready[0] - killed_at
    times["first 200"] = healed
    later = [t for t in hooks.nft_done if hooks.ready and t >= hooks.ready[0]]
    if later:
        times["kernel rules"] = later[0] - killed_at
    return times


#: the way to the first answer: the new role host serves the connections that waited in its
#: listening socket's backlog (the bootstrapper holds it) as soon as its sites serve
CRITICAL = ["death noticed", "role host up", "on_start called", "ready (role host)", "first 200"]
#: the status on its way up, beside it (a client that came after the balancer took the instance
#: out waits in user space for "in rotation")
STATUS = ["ready (role host)", "ready (bootstrapper)", "ready (host agent)", "in rotation", "kernel rules"]


def _steps(rounds: list[dict[str, float]], start: str, chain: list[str], title: str) -> None:
    print(title)
    for before, step in zip([start, *chain], chain, strict=False):
        deltas = [
            r[step] - r.get(before, 0.0) for r in rounds if step in r and (before == "kill" or before in r)
        ]
        if deltas:
            print(
                f"  {before + ' -> ' + step:42s} {statistics.median(deltas) * 1000:6.1f} ms median"
                f" ({min(deltas) * 1000:.0f} to {max(deltas) * 1000:.0f})"
            )


def report(rounds: list[dict[str, float]], fork: float, interpreter: float) -> None:
    _steps(rounds, "kill", CRITICAL, "the way to the first answer, each step from the one before:")
    _steps(rounds, STATUS[0], STATUS[1:], "the status beside it, each step from the one before:")
    heals = sorted(r["first 200"] for r in rounds)
    median = statistics.median(heals)
    print(
        f"SIGKILLed role host to serving again through the load balancer: {median * 1000:.0f} ms median of"
        f" {len(heals)} kills (fastest {heals[0] * 1000:.0f}, slowest {heals[-1] * 1000:.0f}; goal < 100 ms)"
    )
    print(
        f"  raw baselines, same run: a bare fork {fork * 1000:.2f} ms, a bare interpreter {interpreter * 1000:.0f} ms"
        f"   -> {median / interpreter:.2f}x an interpreter start, {median / fork:.0f}x a fork   [{load_average()}]"
    )


async def main() -> None:
    settings = Settings.fast(role_restart_reset=0.5)
    print(f"heal benchmark ({os.cpu_count()} cores, {KILLS} kills)   [{load_average()}]")
    interpreter = bare_interpreter()
    fork = bare_fork()
    with tempfile.TemporaryDirectory() as tmp:
        rounds = await heal_rounds(Path(tmp), settings)
    report(rounds, fork, interpreter)


if __name__ == "__main__":
    anyio.run(main, backend="trio")
