"""Control plane benchmark: deploy to Ready, heal through the load balancer, LB throughput, memory.

    .venv/bin/python benchmarks/fabric.py [--quick]

Every figure stands beside a raw baseline measured in the same run:
- 10 worker instances deployed to all Ready, against 10 bare interpreters started at once;
- a SIGKILLed role host to serving again through the load balancer (one instance), against the
  same bare interpreter start;
- HTTP requests/s through the load balancer against the same site directly (wrk when installed);
- memory of one worker instance, all its processes together, against a bare interpreter: resident
  and proportional (forked processes share pages; the proportional size splits them fairly).

    .venv/bin/python benchmarks/fabric.py --density [--counts 10,25,50,100] [--idle-window 60]

runs only the density series instead: hello-worker (ExtraSmall) deployed at each count with the
default settings (Azure's intervals), the time to all Ready (also in bare interpreter starts per
instance), proportional memory per instance (its VM's processes together, each kind of process
apart, and the whole fabric divided by the count), and the idle CPU of the whole fabric once
Ready (``--no-idle`` skips it): over one diagnostics interval, by kind of process, each with its
event loops' wakeups (the count that holds whatever the load; the CPU a wakeup costs does not).
Baselines in the same run: a bare interpreter's start and proportional memory, a bare fork, the
private memory of a bare fork idling on trio (what any forked process costs), and the CPU a
bare trio process spends per wakeup, measured during the idle window itself. Each line carries
the load average; the machine is shared, so run the 100-instance point sparingly.
"""

from __future__ import annotations

import os
import re
import shutil
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
import anyio.to_thread  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402
from bench_timing import bare_fork, load_average  # noqa: E402

from actors import command_line  # noqa: E402
from fabric.client import AsyncFabricClient  # noqa: E402
from fabric.client.deployments import deploy_service  # noqa: E402
from fabric.controller.messages import DeploymentView, ListDeployments  # noqa: E402
from fabric.server import open_fabric  # noqa: E402
from fabric.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = "--quick" in sys.argv
SECONDS = 3 if QUICK else 8
DENSITY = "--density" in sys.argv
IDLE = "--no-idle" not in sys.argv
COUNTS = (
    [int(n) for n in sys.argv[sys.argv.index("--counts") + 1].split(",")]
    if "--counts" in sys.argv
    else [10, 25, 50, 100]
)
KILLS = 5 if QUICK else 21
#: Seconds over which the idle CPU of the whole fabric is measured: one diagnostics interval
#: (the longest default period), four status checks, 24 heartbeats.
IDLE_WINDOW = float(sys.argv[sys.argv.index("--idle-window") + 1]) if "--idle-window" in sys.argv else 60.0


def with_count(example: str, count: int, tmp: Path) -> Path:
    """A copy of an example whose every role has ``count`` instances."""
    target = tmp / f"{example}-{count}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / example, target)
    cscfg = target / "ServiceConfiguration.Local.cscfg"
    cscfg.write_text(re.sub(r'<Instances count="\d+"', f'<Instances count="{count}"', cscfg.read_text()))
    return target


async def deploy(state_dir: Path, service: Path, *, wait: bool = True) -> None:
    """Deploy a service folder to the fabric at ``state_dir``."""
    async with AsyncFabricClient(state_dir) as client:
        await deploy_service(client, service, None, wait=wait)


def bare_interpreters(n: int) -> float:
    """Seconds to start n interpreters at once, each importing what a fabric process imports."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", "import anyio, trio, msgspec, actors"]) for _ in range(n)
    ]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - start


async def views(controller) -> list[DeploymentView]:  # type: ignore[no-untyped-def]
    views: list[DeploymentView] = await controller.ask(ListDeployments())
    return views


async def all_ready(controller, count: int) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(600):
        while True:
            ready = [i for v in await views(controller) for i in v.instances if i.status == "ReadyRole"]
            if len(ready) >= count:
                return
            await anyio.sleep(0.05)  # each poll builds every instance's view in the fabric


async def deploy_ten(tmp: Path, settings: Settings) -> float:
    service = with_count("hello-worker", 10, tmp)
    async with open_fabric(tmp / "state10", settings) as fabric:
        start = time.perf_counter()
        await deploy(fabric.state_dir, service, wait=False)
        await all_ready(fabric.controller, 10)
        return time.perf_counter() - start


def role_host_pids(name: str) -> list[int]:
    """Pids of processes named ``name`` among our descendants (actors carry their name on argv)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if command_line(proc.cmdline())[6:7] == [name]:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


async def heal_and_throughput(tmp: Path, settings: Settings) -> tuple[list[float], float, float]:
    """(SIGKILL-to-serving times, LB req/s, direct req/s)."""
    service = with_count("hwc-wsgi", 1, tmp)
    async with open_fabric(tmp / "stateweb", settings) as fabric:
        await deploy(fabric.state_dir, service)
        await all_ready(fabric.controller, 1)
        view = (await views(fabric.controller))[0]
        lb_port = view.endpoints[0].port
        direct = view.instances[0].endpoints["HttpIn"]
        heals = []
        async with httpx.AsyncClient(timeout=0.5) as client:
            for _ in range(KILLS):
                (pid,) = role_host_pids("WaWebHost")
                killed = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                with anyio.fail_after(60):
                    while True:
                        try:
                            if (await client.get(f"http://127.0.0.1:{lb_port}/")).status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        await anyio.sleep(0.005)
                # The clock stops at the answer; the scan of our processes is not part of the heal.
                heals.append(time.perf_counter() - killed)
                if pid in role_host_pids("WaWebHost"):
                    raise RuntimeError(f"the killed role host {pid} still runs")
                await anyio.sleep(settings.role_restart_reset + 0.1)
        through = await requests_per_second(f"http://127.0.0.1:{lb_port}/")
        straight = await requests_per_second(f"http://{direct}/")
        return heals, through, straight


async def requests_per_second(url: str) -> float:
    wrk = shutil.which("wrk")
    if wrk:
        out = (await anyio.run_process([wrk, "-t1", "-c16", f"-d{SECONDS}s", url])).stdout.decode()
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = 0
    end = time.perf_counter() + SECONDS
    async with httpx.AsyncClient() as client:

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await client.get(url)
                done += 1

        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(loop)
    return done / SECONDS


async def worker_memory(tmp: Path, settings: Settings) -> tuple[float, float]:
    """(resident, proportional) MiB of one hello-worker instance: its VM process and every
    descendant. Forked processes share their parent's pages until they write them: resident
    memory counts a shared page once per process, proportional memory splits it among them."""
    service = with_count("hello-worker", 1, tmp)
    async with open_fabric(tmp / "staterss", settings) as fabric:
        await deploy(fabric.state_dir, service)
        await all_ready(fabric.controller, 1)
        await anyio.sleep(1)
        vm = next(
            p
            for p in psutil.Process().children(recursive=True)
            if any(a.startswith("vm:") for a in command_line(p.cmdline()))
        )
        procs = [vm, *vm.children(recursive=True)]
        infos = [p.memory_full_info() for p in procs]
        return sum(i.rss for i in infos) / 2**20, sum(i.pss for i in infos) / 2**20


def _tree() -> list[psutil.Process]:
    return [psutil.Process(), *psutil.Process().children(recursive=True)]


def _pss(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            continue
    return total / 2**20


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, tuple[float, int]]:
    """Each process's CPU seconds so far (all its threads, ended ones too: the kernel keeps
    the scheduler's exact run time, shown in 10 ms units) and its event loop's wakeups (the
    voluntary context switches of its main thread): a count the machine's load does not change,
    unlike the CPU each wakeup costs."""
    found = {}
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                found[proc.pid] = (times.user + times.system, proc.num_ctx_switches().voluntary)
        except psutil.Error:
            continue
    return found


#: The kinds of a VM's processes, by the actor name on their command line.
KINDS = {"vm": "vm", "WaHostBootstrapper": "bootstrapper", "RoleHostTemplate": "template"}


def _kind(proc: psutil.Process) -> str:
    args = _args(proc)
    if any(a.startswith("vm:") for a in args):
        return "vm"
    if "actors._template" in args:
        return "template"
    name = args[6] if len(args) > 6 else ""
    if name.startswith("host:"):
        return "host agent"
    return KINDS.get(name, "role host" if name.startswith("Wa") else "other")


#: The kinds of process the idle CPU is split into, in the order printed.
CPU_KINDS = ("fabric", "host agent", "vm", "bootstrapper", "template", "role host", "other")


async def density_point(tmp: Path, count: int, measure_cpu: bool) -> dict[str, float]:
    """Deploy ``count`` hello-worker instances with the default settings; see the docstring."""
    settings = Settings(host_cores=32)  # 4 hosts of 32 cores: room for 100 ExtraSmall
    service = with_count("hello-worker", count, tmp)
    figures: dict[str, float] = {}
    async with open_fabric(tmp / f"density{count}", settings) as fabric:
        start = time.perf_counter()
        await deploy(fabric.state_dir, service, wait=False)
        await all_ready(fabric.controller, count)
        figures["deploy"] = time.perf_counter() - start
        await anyio.sleep(3)  # past the first heartbeats and status checks
        procs = _tree()
        vms = [p for p in procs if any(a.startswith("vm:") for a in _args(p))]
        vm_procs = [q for vm in vms for q in [vm, *vm.children(recursive=True)]]
        figures["vms"] = len(vms)
        figures["per_vm_processes"] = len(vm_procs) / max(1, len(vms))
        figures["instance_pss"] = await anyio.to_thread.run_sync(_pss, vm_procs) / count
        figures["whole_pss"] = await anyio.to_thread.run_sync(_pss, procs) / count
        for kind in ("vm", "bootstrapper", "template", "role host"):
            of_kind = [p for p in vm_procs if _kind(p) == kind]
            figures[f"pss {kind}"] = await anyio.to_thread.run_sync(_pss, of_kind) / max(1, len(of_kind))
        if measure_cpu:
            kinds = {p.pid: "fabric" if p.pid == os.getpid() else _kind(p) for p in procs}
            before = await anyio.to_thread.run_sync(_cpu_seconds, procs)
            began = time.perf_counter()
            figures["bare_wakeup"] = await bare_wakeup(IDLE_WINDOW - 2)
            await anyio.sleep(max(0.0, IDLE_WINDOW - (time.perf_counter() - began)))
            after = await anyio.to_thread.run_sync(_cpu_seconds, procs)
            wall = time.perf_counter() - began
            for kind in (*CPU_KINDS, None):
                pids = [p for p in after if p in before and (kind is None or kinds.get(p) == kind)]
                key = "" if kind is None else f" {kind}"
                figures[f"cpu{key}"] = sum(after[p][0] - before[p][0] for p in pids) / wall
                figures[f"wakeups{key}"] = sum(after[p][1] - before[p][1] for p in pids) / wall
    return figures


#: A bare trio process that echoes each byte it reads, and the driver that wakes it ``rate``
#: times a second for ``seconds`` and prints its CPU seconds per wakeup and its wakeups.
_ECHO = """
import os, trio
async def main():
    while data := await trio.lowlevel.FdStream(os.dup(0)).receive_some(1):
        os.write(1, data)
trio.run(main)
"""
_DRIVE = """
import subprocess, sys, time, psutil
seconds, rate, echo = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
proc = subprocess.Popen([sys.executable, "-c", echo], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def wake():
    proc.stdin.write(b"x"); proc.stdin.flush(); proc.stdout.read(1)
wake()
child = psutil.Process(proc.pid)
def cpu():
    return sum(child.cpu_times()[:2])
first, waked = cpu(), child.num_ctx_switches().voluntary
end = time.monotonic() + seconds
while time.monotonic() < end:
    wake()
    time.sleep(1 / rate)
last, woken = cpu(), child.num_ctx_switches().voluntary
proc.stdin.close(); proc.wait()
wakeups = max(1, woken - waked)
print((last - first) / wakeups, wakeups)
"""


async def bare_wakeup(seconds: float, rate: float = 20.0) -> float:
    """CPU seconds per wakeup of a bare trio process woken ``rate`` times a second for
    ``seconds`` by a byte it echoes back: what waking any idle process costs on this machine
    at this moment (run beside the fabric's idle window, so both see the same load; in
    processes of its own, so that none of it counts as the fabric's)."""
    out = await anyio.run_process([sys.executable, "-c", _DRIVE, str(seconds), str(rate), _ECHO])
    return float(out.stdout.split()[0])


def bare_fork_memory() -> float:
    """Private MiB of a child forked from this process (a fabric's imports, no event loop
    running) that runs an idle trio loop: the floor of any forked process actor."""
    import gc

    import trio

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(write)
            gc.freeze()

            async def idle() -> None:
                await trio.lowlevel.wait_readable(read)

            trio.run(idle)
        finally:
            os._exit(0)
    os.close(read)
    time.sleep(1.0)
    uss = psutil.Process(pid).memory_full_info().uss
    os.close(write)
    os.waitpid(pid, 0)
    return uss / 2**20


def _args(proc: psutil.Process) -> list[str]:
    try:
        return command_line(proc.cmdline())
    except psutil.Error:
        return []


async def density(tmp: Path, fork_uss: float) -> None:
    floor = bare_interpreters(1)
    fork = bare_fork()
    _, bare_pss = bare_memory()
    print(
        f"density: hello-worker (ExtraSmall), default settings; baselines: a bare interpreter starts in "
        f"{floor * 1000:.0f} ms and is {bare_pss:.1f} MiB proportional, a bare fork {fork * 1000:.2f} ms, "
        f"a bare fork idling on trio {fork_uss:.1f} MiB private"
    )
    for count in COUNTS:
        floor = bare_interpreters(1)  # again at each count: the load changes under a long run
        f = await density_point(tmp, count, measure_cpu=IDLE)
        kinds = " + ".join(
            f"{kind} {f[f'pss {kind}']:.1f}" for kind in ("vm", "bootstrapper", "template", "role host")
        )
        line = (
            f"{count:4d} instances: all Ready in {f['deploy']:6.2f} s ({f['deploy'] / count * 1000:5.0f} ms each, "
            f"{f['deploy'] / count / floor:4.2f} bare interpreter starts of {floor * 1000:.0f} ms; goal < 15 s at 100)   "
            f"{f['instance_pss']:5.1f} MiB proportional per instance ({kinds}; "
            f"whole fabric {f['whole_pss']:5.1f} MiB per instance; goal < 30)"
        )
        if "cpu" in f:
            split = ", ".join(
                f"{kind} {f[f'cpu {kind}'] * 100:.1f}% {f[f'wakeups {kind}']:.0f}/s"
                for kind in CPU_KINDS
                if f[f"wakeups {kind}"]
            )
            line += (
                f"   idle CPU of the whole fabric over {IDLE_WINDOW:g} s {f['cpu'] * 100:5.1f}% of one core, "
                f"{f['wakeups']:.0f} wakeups/s ({split}; goal < 10%); "
                f"a bare trio process costs {f['bare_wakeup'] * 1e6:.0f} us a wakeup meanwhile: "
                f"the fabric's wakeups at that cost {f['wakeups'] * f['bare_wakeup'] * 100:.1f}%, "
                f"the fabric {f['cpu'] / max(1e-9, f['wakeups'] * f['bare_wakeup']):.1f}x that"
            )
        print(f"{line}   [{load_average()}]", flush=True)


def bare_memory() -> tuple[float, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import anyio, trio, msgspec, actors, sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    time.sleep(1.0)
    info = psutil.Process(proc.pid).memory_full_info()
    proc.communicate(b"")
    return info.rss / 2**20, info.pss / 2**20


async def main(fork_uss: float) -> None:
    settings = Settings.fast(role_restart_reset=0.5)
    print(f"fabric benchmark ({os.cpu_count()} cores){' quick' if QUICK else ''}   [{load_average()}]")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if DENSITY:
            await density(tmp, fork_uss)
            return
        floor10 = bare_interpreters(10)
        deploy = await deploy_ten(tmp, settings)
        print(
            f"deploy 10 worker instances to all Ready: {deploy:6.2f} s   (10 bare interpreters at once: {floor10:5.2f} s; goal < 3 s)"
        )
        floor1 = bare_interpreters(1)
        fork = bare_fork()
        heals, through, straight = await heal_and_throughput(tmp, settings)
        heals.sort()
        print(
            f"SIGKILLed role host to serving again through the load balancer: {statistics.median(heals) * 1000:6.0f} ms median"
            f" of {len(heals)} kills (fastest {heals[0] * 1000:.0f}, slowest {heals[-1] * 1000:.0f})"
            f"   (a bare interpreter: {floor1 * 1000:4.0f} ms, a bare fork: {fork * 1000:.2f} ms; goal < 100 ms)"
            f"   [{load_average()}]"
        )
        print(
            f"HTTP through the load balancer: {through:8.0f} req/s   directly: {straight:8.0f} req/s   ratio {through / straight:4.2f}x (goal >= 0.8x)"
        )
        rss, pss = await worker_memory(tmp, settings)
        bare_rss, bare_pss = bare_memory()
        print(
            f"one worker instance, all its processes: {rss:6.1f} MiB resident, {pss:6.1f} MiB proportional"
            f"   (a bare interpreter: {bare_rss:5.1f} MiB resident, {bare_pss:5.1f} MiB proportional)"
        )


if __name__ == "__main__":
    anyio.run(main, bare_fork_memory() if DENSITY else 0.0, backend="trio")
