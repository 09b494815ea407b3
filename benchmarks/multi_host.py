"""Several machines, on one: hosts in network namespaces (tests/netns.py) joined to a real
`fabric serve --listen`, beside the same deployment on the fabric's own local hosts.

    .venv/bin/python benchmarks/multi_host.py [--rounds N] [--keep DIR] [--one-session]    (root: namespaces)

Figures (issue 12), each beside its baseline measured in the same run:
- deploy 12 instances (6 web, 6 worker) over 3 namespace hosts to all ReadyRole, vs the same
  service over 3 local hosts (goal: within 1.5x); then deleted and deployed again (the hosts hold
  the package and run their guest templates: the remote path's own costs are not hidden behind
  a guest template's start);
- a namespace host cut off (its link set down): the time until the controller no longer counts
  it Ready (detect), and until every instance is ReadyRole on the other hosts with each web
  instance answering HTTP at its own address (serves again), beside host_failure_timeout.
Rounds alternate local and namespace deploys (and which goes first), so that a load that comes and
goes weighs on both; each deploy's CPU (every process of that fabric) is printed beside its time.
``--keep DIR`` keeps each run's state and logs there (deploy.txt: when each deploy began, its time).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402

from fabric.client import AsyncFabricClient  # noqa: E402
from fabric.client.deployments import delete_and_wait, deploy_service  # noqa: E402
from tests.integration.test_e2e_join import free_port_pair  # noqa: E402
from tests.netns import NetHosts, net_hosts, why_unavailable  # noqa: E402

FABRIC = str(Path(sys.executable).with_name("fabric"))
SPREAD = ROOT / "tests" / "fabric" / "cluster" / "services" / "spread"
ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 2
#: a folder to keep every run's state and logs in (for a breakdown), instead of a temporary one
KEEP = sys.argv[sys.argv.index("--keep") + 1] if "--keep" in sys.argv else ""
#: the joined host agents share this benchmark's session (as before: see Fabric._start)
ONE_SESSION = "--one-session" in sys.argv
PER_ROLE = 6
TOTAL = 2 * PER_ROLE
FAILURE_TIMEOUT = 3.0  # the fast profile's host_failure_timeout


def service(tmp: Path) -> Path:
    """The spread service with 6 instances per role and a free load-balanced port."""
    target = tmp / "spread"
    shutil.copytree(SPREAD, target, dirs_exist_ok=True)
    cscfg = target / "ServiceConfiguration.Local.cscfg"
    cscfg.write_text(re.sub(r'count="\d+"', f'count="{PER_ROLE}"', cscfg.read_text()))
    csdef = target / "ServiceDefinition.csdef"
    port = free_port_pair("127.0.0.1")
    csdef.write_text(csdef.read_text().replace('port="8081"', f'port="{port}"'))
    return target


async def poll(check: Callable[[], Awaitable[Any]], seconds: float, what: str) -> Any:
    try:
        with anyio.fail_after(seconds):
            while not (found := await check()):
                await anyio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"not within {seconds:g} s: {what}") from None
    return found


class Fabric:
    """A `fabric serve` process (local hosts, or listening for joined ones) and its hosts."""

    def __init__(self, tmp: Path, net: NetHosts | None) -> None:
        self.tmp, self.net = tmp, net
        self.state = tmp / "state"
        self.processes: list[subprocess.Popen[bytes]] = []
        #: CPU seconds of this fabric's processes over its last deploy
        self.deploy_cpu = 0.0

    async def __aenter__(self) -> Fabric:
        try:
            await self._start()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.__aexit__()
            raise
        return self

    async def _start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        settings = self.tmp / "settings.toml"
        settings.write_text("max_hosts = 0\n" if self.net else "max_hosts = 3\n")
        argv = [FABRIC, "serve", "--fast", "--settings", str(settings), "--state-dir", str(self.state)]
        if self.net is not None:
            listen = f"{self.net.gateway}:{free_port_pair(self.net.gateway)}"
            argv += ["--listen", listen]
        log = (self.tmp / "serve.log").open("ab")
        self.processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        await poll(self._serving, 60, "fabric serving")
        if self.net is not None:
            async with self.client() as client:
                made = await client.create_token(600)
            for n, host in enumerate(self.net):
                join = [FABRIC, "host", "join", listen, "--token", made.token, "--ca-hash", made.ca_hash,
                        "--name", host.name, "--address", host.address, "--cores", "8",
                        "--fault-domain", str(n), "--state-dir", str(host.state_dir / "host")]  # fmt: skip
                out = (host.state_dir / "join.log").open("ab")
                # A session of its own, as a host agent has on its own machine (and as the fabric
                # gives each local host): with the kernel's autogroup scheduling, a session is
                # what gets a share of the CPU, and the three agents and their guest templates
                # shared this benchmark's one (guest template starts 2x slower under load).
                proc = host.popen(
                    join, stdout=out, stderr=subprocess.STDOUT, start_new_session=not ONE_SESSION
                )
                self.processes.append(proc)
            await poll(self._hosts_ready, 120, "hosts Ready")

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):  # also when the run is cancelled (SIGTERM)
            await self._stop()

    async def _stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                await anyio.to_thread.run_sync(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def client(self) -> AsyncFabricClient:
        return AsyncFabricClient(self.state)

    async def _serving(self) -> bool:
        log = self.tmp / "serve.log"
        return log.exists() and "fabric serving" in log.read_text(errors="replace")

    async def _hosts_ready(self) -> bool:
        assert self.net is not None
        return {h.name for h in self.net} <= await self.ready_hosts()

    async def ready_hosts(self) -> set[str]:
        async with self.client() as client:
            return {h.name for h in await client.all_hosts() if h.kind == "joined" and h.state == "Ready"}

    async def instances(self) -> list[Any]:
        async with self.client() as client:
            views = await client.deployments()
        return list(views[0].instances) if views else []

    async def all_ready(self, avoid: str = "") -> bool:
        found = await self.instances()
        return len(found) == TOTAL and all(i.status == "ReadyRole" and i.host != avoid for i in found)

    async def deploy(self, package: Path, label: str = "deploy") -> float:
        """Seconds from the deploy request to every instance ReadyRole."""
        before = self.cpu()
        start, wall = time.perf_counter(), time.time()
        async with self.client() as client:
            await deploy_service(client, package, None)
        await poll(self.all_ready, 300, "all ReadyRole")
        took = time.perf_counter() - start
        self.deploy_cpu = sum(self.cpu().values()) - sum(before.values())
        (self.tmp / f"{label}.txt").write_text(f"{wall:.3f} {took:.3f}\n")  # for a breakdown (--keep)
        return took

    async def redeploy(self, package: Path) -> float:
        """Delete the deployment (its VMs stopped), then ``deploy`` it again: the hosts hold the
        package and run their guest templates already (what every deploy after a host's first
        meets)."""
        async with self.client() as client:
            await delete_and_wait(client, "spread", "production")
        await poll(lambda: _no_instances(self), 60, "the deployment gone")
        return await self.deploy(package, "redeploy")

    def cpu(self) -> dict[int, float]:
        """CPU seconds (user + system) of every process of this fabric (serve, its hosts, their
        VMs, and the children each has reaped), by pid."""
        found: dict[int, float] = {}
        for proc in self.processes:
            try:
                tree = [psutil.Process(proc.pid)]
                tree += tree[0].children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    t = p.cpu_times()
                    found[p.pid] = t.user + t.system + t.children_user + t.children_system
        return found


async def _no_instances(fabric: Fabric) -> bool:
    return not await fabric.instances()


async def web_serves(instances: list[Any]) -> bool:
    """Each web instance answers HTTP at its own endpoint."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        for i in instances:
            if i.role != "Hello":
                continue
            try:
                if (await http.get(f"http://{i.endpoints['HttpIn']}/")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


async def cut_off(fabric: Fabric) -> tuple[float, float, float, int]:
    """Set the link of the host with most instances down: (seconds until it is no longer
    Ready, until it is declared Dead, until every instance serves elsewhere; instances it had)."""
    assert fabric.net is not None
    before = await fabric.instances()
    counts = {h.name: sum(i.host == h.name for i in before) for h in fabric.net}
    victim = max(counts, key=lambda name: counts[name])
    host = next(h for h in fabric.net if h.name == victim)
    start = time.perf_counter()
    host.set_link(False)
    try:
        await poll(lambda: _without(fabric, victim), 60, "not Ready")
        missed = time.perf_counter() - start
        await poll(lambda: _dead(fabric, victim), 60, "Dead")
        dead = time.perf_counter() - start

        async def healed() -> bool:
            return await fabric.all_ready(avoid=victim) and await web_serves(await fabric.instances())

        await poll(healed, 120, "healed")
        return missed, dead, time.perf_counter() - start, counts[victim]
    finally:
        host.set_link(True)


async def _without(fabric: Fabric, name: str) -> bool:
    return name not in await fabric.ready_hosts()


async def _dead(fabric: Fabric, name: str) -> bool:
    async with fabric.client() as client:
        return any(h.name == name and h.state == "Dead" for h in await client.all_hosts())


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


#: a deploy's seconds and CPU seconds (every process of its fabric), first on fresh hosts, then again
Deploys = tuple[float, float, float, float]


async def deploys(fabric: Fabric, package: Path) -> Deploys:
    first = await fabric.deploy(package)
    first_cpu = fabric.deploy_cpu
    again = await fabric.redeploy(package)
    return first, first_cpu, again, fabric.deploy_cpu


async def local_round(tmp: Path, package: Path) -> Deploys:
    """Deploy on 3 local hosts, delete, deploy again."""
    async with Fabric(tmp, None) as fabric:
        return await deploys(fabric, package)


async def joined_round(tmp: Path, package: Path) -> tuple[Deploys, tuple[float, float, float, int]]:
    """The same on 3 namespace hosts, then cut one off."""
    with net_hosts(3, tmp / "hosts") as net:
        async with Fabric(tmp, net) as fabric:
            done = await deploys(fabric, package)
            return done, await cut_off(fabric)


async def main() -> None:
    reason = why_unavailable()
    if reason is not None:
        sys.exit(f"multi_host: {reason}")
    local_s: list[Deploys] = []
    ns_s: list[Deploys] = []
    cuts: list[tuple[float, float, float, int]] = []
    with contextlib.ExitStack() as stack:
        if KEEP:
            tmp = Path(KEEP)
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="multi-host-")))
        package = service(tmp)
        for r in range(ROUNDS):
            # Alternate which goes first, so that a load that rises or falls weighs on both.
            if r % 2:
                joined, cut = await joined_round(tmp / f"ns{r}", package)
                local = await local_round(tmp / f"local{r}", package)
            else:
                local = await local_round(tmp / f"local{r}", package)
                joined, cut = await joined_round(tmp / f"ns{r}", package)
            local_s.append(local)
            ns_s.append(joined)
            cuts.append(cut)
            print(
                f"round {r + 1}: local {local[0]:.2f} s (CPU {local[1]:.2f}), again {local[2]:.2f} s "
                f"(CPU {local[3]:.2f}); namespaces {joined[0]:.2f} s (CPU {joined[1]:.2f}), again "
                f"{joined[2]:.2f} s (CPU {joined[3]:.2f}): {joined[0] / local[0]:.2f}x, again "
                f"{joined[2] / local[2]:.2f}x; cut off ({cut[3]} instances): NotReady {cut[0]:.2f} s, "
                f"Dead {cut[1]:.2f} s, serving elsewhere {cut[2]:.2f} s  ({load()})",
                flush=True,
            )
    print(
        f"deploy {TOTAL} instances to all ReadyRole over 3 hosts (median of {ROUNDS}; CPU: all the fabric's processes):"
    )
    for k, what in ((0, "on fresh hosts"), (2, "again (deleted first: package and guest templates there)")):
        local_med, ns_med = (statistics.median(x[k] for x in s) for s in (local_s, ns_s))
        local_cpu, ns_cpu = (statistics.median(x[k + 1] for x in s) for s in (local_s, ns_s))
        ratios = sorted(n[k] / lo[k] for n, lo in zip(ns_s, local_s, strict=True))
        print(f"  {what}:")
        print(f"    local hosts (baseline)     {local_med:6.2f} s   CPU {local_cpu:5.2f} s")
        print(
            f"    namespace hosts (joined)   {ns_med:6.2f} s   CPU {ns_cpu:5.2f} s   {ns_med / local_med:.2f}x "
            f"(per round {statistics.median(ratios):.2f}x, {ratios[0]:.2f}-{ratios[-1]:.2f}x; goal <= 1.5x)"
        )
    missed, dead, healed = (statistics.median(c[k] for c in cuts) for k in range(3))
    print(f"a namespace host cut off (link down), host_failure_timeout {FAILURE_TIMEOUT:g} s (baseline):")
    print(f"  no longer Ready (NotReady)   {missed:6.2f} s")
    print(f"  declared Dead                {dead:6.2f} s   {dead / FAILURE_TIMEOUT:.2f}x the timeout")
    print(f"  every instance serves again  {healed:6.2f} s   (its instances placed on the other two)")


async def run() -> None:
    """``main``, cancelled by a SIGTERM (timeout, kill) so that every namespace and process of
    the run still goes (a background job ignores SIGINT, and a signal handler that raises could
    land where no finally runs)."""
    terminated = False

    async def on_sigterm(scope: anyio.CancelScope) -> None:
        nonlocal terminated
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                terminated = True
                scope.cancel()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_sigterm, tg.cancel_scope)
        await main()
        tg.cancel_scope.cancel()
    if terminated:
        sys.exit("multi_host: stopped by SIGTERM (everything it made is removed)")


if __name__ == "__main__":
    anyio.run(run, backend="trio")
