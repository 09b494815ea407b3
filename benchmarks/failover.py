"""Replicated controller benchmark: failover, operations per second, takeover of 1,000 instances.

    .venv/bin/python benchmarks/failover.py [--quick] [--kills 3] [--instances 1000]

PostgreSQL is a real server started for the run in a temporary folder (initdb + pg_ctl, fsync
on), on 127.0.0.1. Figures:

- failover: two `fabric serve --fast --replica` processes on one state folder and one database,
  the web role of examples/hwc-wsgi (two instances) answering through the load balancer under a steady
  20 requests/s; the leader is SIGKILLed. Measured from the kill: the other replica holds the
  lease (database time), it acts as leader (its controller, FFE and balancers up), its API
  answers a read, the site answers through the load balancer again; and the requests that
  failed meanwhile. Beside them, the floor: the lease (leader_lease_duration, 3 s in the fast
  profile): no replica may take over before it expires. The killed replica is started again
  (it follows) before the next kill, which waits for the survivor's standby balancer to serve
  the site. The local hosts outlive the leader (fabric.replica.local_hosts): the site may
  never go down ("site 0.00 s").
- failover with joined hosts: the same with three `fabric host join` processes (loopback
  aliases) running a 2-role x 3-instance web service (tests/fabric/cluster/services/spread),
  every replica given one host-port address: the site's requests lost until the new leader's
  balancer answers, and whether every VM kept its pid (adopted, not restarted).
- operations per second, one client, one after another: an operation (POST ?comp=status
  Running on a running deployment, 202, then GET operation until Succeeded) on `fabric serve`
  with SQLite, on the PostgreSQL leader, and through a follower (forwarded), each beside the
  raw round trip of the same server (GET /subscriptions: HTTP and authentication, no store);
  and the store's own write (one OperationRecord upserted) on SQLite, on PostgreSQL, and on
  PostgreSQL fenced (the lease row checked in the same transaction, as a leader writes) beside
  a raw psycopg upsert loop.
- takeover: the real FabricController with N instances (2 Large per 8-core stand-in host,
  benchmarks/controller_scale.py's simulator) is SIGKILLed; a new controller takes the lease
  and loads the goal state, resumes, and brings every instance back (its hosts were children of
  the killed one). Measured: lease acquired -> goal state loaded (ListDeployments shows every
  instance), and -> every instance ReadyRole again; beside the same restart on SQLite.

The load average is printed beside the figures (the machine may be shared).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(_HERE.parent), os.environ.get("PYTHONPATH", "")) if p
)

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import httpx  # noqa: E402
import msgspec  # noqa: E402

from actors import ProcessOptions, Ref, open_system  # noqa: E402
from benchmarks.controller_scale import (  # noqa: E402
    CONFIG,
    DEFINITION,
    BenchController,
    bench_settings,
    sim_stats,
)
from benchmarks.support.bench_scale import (  # noqa: E402
    deploy_scale,
    kill_controller,
    wait_listed,
    write_scale_package,
)
from fabric.model.package import build_package  # noqa: E402
from fabric.settings import Settings  # noqa: E402
from tests.fabric.replica.replica_kit import stop_all  # noqa: E402
from tests.pg_server import PostgresServer, missing_reason  # noqa: E402

EXAMPLES = _HERE.parent / "examples"
LEASE = Settings.fast().leader_lease_duration


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# -- failover --------------------------------------------------------------------------------------


class SiteLoad:
    """GET the site every ``interval`` s, each on a new connection (a kept-alive one through the
    kernel data path never meets a balancer again); remembers (sent, ok) of each request."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url = url
        self.interval = interval
        self.results: list[tuple[float, bool]] = []

    async def run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=1.0, limits=limits) as client:
            while True:
                sent = time.monotonic()
                try:
                    ok = (await client.get(self.url)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.results.append((sent, ok))
                await anyio.sleep(max(0.0, sent + self.interval - time.monotonic()))

    def first_ok_after(self, t0: float) -> float | None:
        """When the site answered again: the first success after the first failure past t0
        (a request the dying leader's balancer still answered does not count)."""
        after = [(sent, ok) for sent, ok in self.results if sent >= t0]
        down = next((i for i, (_, ok) in enumerate(after) if not ok), None)
        if down is None:
            return None
        return next((sent for sent, ok in after[down:] if ok), None)


async def failover(server: PostgresServer, root: Path, kills: int) -> list[dict[str, float]]:
    from fabric.client.deployments import deploy_service
    from tests.fabric.replica.replica_kit import Cluster, eventually

    c = Cluster(root / "failover", server)
    c.tmp.mkdir(parents=True)
    rounds: list[dict[str, float]] = []
    try:
        for name in ("a", "b"):
            await c.start(name)
        leader = await c.leader()
        async with c.client(leader) as client:
            started = await deploy_service(client, EXAMPLES / "hwc-wsgi", None)

            async def ready() -> Any:
                view = await client.deployment(started.service, "production")
                return (
                    view if view.instances and all(i.status == "ReadyRole" for i in view.instances) else None
                )

            view = await eventually(ready, 120, "the site Ready")
        endpoint = view.endpoints[0]
        site = SiteLoad(f"http://{endpoint.host}:{endpoint.port}/")
        async with anyio.create_task_group() as tg:
            tg.start_soon(site.run)
            for k in range(kills):
                old = await c.leader()
                survivor = c.replicas["b" if old.name == "a" else "a"]
                await eventually(lambda: _site_up(site), 120, "the site up before the kill")
                # the survivor's standby balancer serves the site (as long after a deploy or a
                # restart as a views interval or two): a steady state, not a kill just after one
                await eventually(partial(_standby, survivor, endpoint), 60, "the survivor's standby balancer")
                async with c.client(survivor) as client:
                    t0 = time.monotonic()
                    os.kill(old.pid, signal.SIGKILL)

                    async def leads(survivor: Any = survivor) -> float | None:
                        row = await c.lease()
                        live = row and row["live"] and row["holder"] == survivor.name
                        return time.monotonic() if live else None

                    t_lease = await eventually(leads, 60, "lease taken")
                    await c.leader(not_=old.name, seconds=60)
                    t_acting = time.monotonic()

                    async def answers(client: Any = client) -> float | None:
                        try:
                            await client.deployment(started.service, "production")
                            return time.monotonic()
                        except Exception:
                            return None

                    t_api = await eventually(answers, 60, "API answering")
                    await anyio.sleep(1.0)  # a failure just as the new leader acts counts too
                    if all(ok for sent, ok in site.results if sent >= t0):
                        t_site = t0  # never down: its instances outlived the leader (local hosts)
                    else:
                        t_site = await eventually(partial(_first_ok, site, t0), 180, "site answering")
                # the requests lost from the kill until the site and the new leader's API answer
                t_end = max(t_site, t_api)
                failed_until = sum(1 for s, ok in site.results if t0 <= s < t_end and not ok)
                figures = {
                    "lease": t_lease - t0,
                    "acting": t_acting - t0,
                    "api": t_api - t0,
                    "site": t_site - t0,
                    "lost": float(failed_until),
                    "sent": float(sum(1 for s, _ in site.results if t0 <= s < t_end)),
                }
                rounds.append(figures)
                print(
                    f"  kill {k + 1}: lease taken {figures['lease']:.2f} s, acting {figures['acting']:.2f} s, "
                    f"API {figures['api']:.2f} s, site {figures['site']:.2f} s after the kill; "
                    f"{failed_until} of {int(figures['sent'])} requests failed meanwhile (lease {LEASE:g} s); "
                    f"load {load()}",
                    flush=True,
                )
                await c.stop(old)
                await c.start(old.name)  # it follows
            tg.cancel_scope.cancel()
    finally:
        for replica in c.replicas.values():
            await c.stop(replica)
    return rounds


async def failover_joined(
    server: PostgresServer, root: Path, kills: int, kernel: bool = True
) -> list[dict[str, float]]:
    """As failover(), with three joined hosts (loopback aliases) running the instances: they
    outlive the leader, the new leader adopts them, and every replica's standby balancers
    (fabric.replica.balancer) serve the site meanwhile. ``kernel=False``: REDDOG_LB_KERNEL=off
    (the user-space path, as without root). The site's port is a free one (another fabric's
    balancer on the definition's 8081 would answer for it)."""
    from fabric.client.deployments import deploy_service
    from tests.fabric.cluster.joined_kit import Cluster as Joined
    from tests.fabric.cluster.joined_kit import vms_of
    from tests.fabric.replica.replica_kit import Cluster, eventually
    from tests.fabric.replica.test_replica_balancer import spread_on
    from tests.integration.test_e2e_join import free_port_pair
    from tests.netns import loopback_hosts

    rounds: list[dict[str, float]] = []
    started_at: dict[str, int] = {}  # where each replica's output of its last start begins
    before = os.environ.get("REDDOG_LB_KERNEL")
    os.environ["REDDOG_LB_KERNEL"] = "on" if kernel else "off"  # the replicas inherit it
    path = "kernel" if kernel else "user"
    with loopback_hosts(3, root / f"hosts-{path}") as hosts:  # hosts of their own: a fresh join
        settings = root / "joined-settings.toml"
        settings.write_text("max_hosts = 0\n")
        listen = f"{hosts.gateway}:{free_port_pair(hosts.gateway)}"
        c = Cluster(root / f"joined-{path}", server, settings)
        c.tmp.mkdir(parents=True)
        joined = Joined(state=c.state, hosts=hosts, settings=settings, listen=listen)
        try:
            for name in ("a", "b"):
                started_at[name] = 0
                await c.start(name, "--listen", listen)
            await c.leader()
            await joined.join_all((0, 1, 0))
            async with joined.client() as client:
                service = spread_on(free_port_pair("127.0.0.1"), c.tmp)
                await deploy_service(client, service, None)
            view = await joined.all_ready(count=3)
            endpoint = view.endpoints[0]
            site = SiteLoad(f"http://{endpoint.host}:{endpoint.port}/")
            async with anyio.create_task_group() as tg:
                tg.start_soon(site.run)
                for k in range(kills):
                    old = await c.leader()
                    running = {name: vms_of(p) for name, p in joined.joins.items()}
                    await eventually(partial(_site_up, site), 120, "the site up before the kill")
                    survivor = c.replicas["b" if old.name == "a" else "a"]
                    # it serves the site too once it has read the views since it started (a
                    # fabric without standby balancers: it does not)
                    with anyio.move_on_after(30):
                        port = endpoint.port
                        await c.wait_output(
                            survivor, rf"standby balancer on \S+:{port}: ", after=started_at[survivor.name]
                        )
                    mark = len(survivor.output())
                    t0 = time.monotonic()
                    os.kill(old.pid, signal.SIGKILL)
                    await c.leader(not_=old.name, seconds=60)
                    t_acting = time.monotonic()
                    await joined.all_ready(120, count=3)
                    # the new leader's own balancer serves (its standby one handed over), and on
                    with anyio.move_on_after(30):  # (a fabric without standby balancers: none)
                        await c.wait_output(survivor, "the leader's own listens", after=mark)
                    sent = len(site.results)
                    await eventually(partial(_answered, site, sent + 40), 120, "40 answers after")
                    same = {name: vms_of(p) for name, p in joined.joins.items()} == running
                    failed = [s - t0 for s, ok in site.results if t0 <= s and not ok]
                    asked = sum(1 for s, _ in site.results if t0 <= s)
                    rounds.append(
                        {
                            "acting": t_acting - t0,
                            "down": max(failed, default=0.0),
                            "lost": float(len(failed)),
                            "sent": float(asked),
                            "same": float(same),
                        }
                    )
                    print(
                        f"  kill {k + 1} (joined hosts, {'kernel' if kernel else 'user-space'} path): acting "
                        f"{t_acting - t0:.2f} s after the kill; {len(failed)} of {asked} requests failed "
                        f"(sent at {', '.join(f'{x:+.2f}' for x in failed) or '-'} s); instances "
                        f"{'kept (same pids)' if same else 'RESTARTED'}; load {load()}",
                        flush=True,
                    )
                    await c.stop(old)
                    started_at[old.name] = len(old.output())
                    await c.start(old.name, "--listen", listen)
                tg.cancel_scope.cancel()
        finally:
            stop_all(joined.joins.values())
            for replica in c.replicas.values():
                await c.stop(replica)
            if before is None:
                os.environ.pop("REDDOG_LB_KERNEL", None)
            else:
                os.environ["REDDOG_LB_KERNEL"] = before
    return rounds


async def _answered(site: SiteLoad, n: int) -> bool:
    return len(site.results) >= n and site.results[-1][1]


async def _standby(replica: Any, endpoint: Any) -> bool:
    """Whether the replica's (current process's) standby balancer serves the endpoint."""
    text = replica.output()
    text = text[text.rfind(f"replica {replica.name} serving") :]
    return f"standby balancer on {endpoint.host}:{endpoint.port}: " in text and "instance(s)" in text


async def _site_up(site: SiteLoad) -> bool:
    return bool(site.results) and site.results[-1][1]


async def _first_ok(site: SiteLoad, t0: float) -> float | None:
    return site.first_ok_after(t0)


# -- operations per second -------------------------------------------------------------------------


async def api_rate(client: Any, service: str, n: int) -> tuple[float, float]:
    """(operations/s, raw round trips/s) on one client."""
    start = time.perf_counter()
    for _ in range(n):
        op = await client.wait(await client.set_status(service, "production", "Running"), interval=0.01)
        assert op.status == "Succeeded", op
    ops = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(n):
        await client.request("GET", "/subscriptions")
    raw = n / (time.perf_counter() - start)
    return ops, raw


async def api_figures(server: PostgresServer, root: Path, n: int) -> dict[str, tuple[float, float]]:
    from fabric.client import AsyncFabricClient
    from fabric.client.deployments import deploy_service
    from tests.fabric.replica.replica_kit import FABRIC, Cluster

    out: dict[str, tuple[float, float]] = {}
    # SQLite: a plain fabric serve process
    state = root / "sqlite-state"
    log = (root / "sqlite.log").open("wb")
    process = await anyio.open_process(
        [FABRIC, "serve", "--fast", "--state-dir", str(state)], stdout=log, stderr=log
    )
    try:
        with anyio.fail_after(60):
            while not (state / "api").exists():
                await anyio.sleep(0.1)
        async with AsyncFabricClient(state) as client:
            started = await deploy_service(client, EXAMPLES / "hello-worker", None)
            out["SQLite, fabric serve"] = await api_rate(client, started.service, n)
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(60):
            await process.wait()
        log.close()
    c = Cluster(root / "ops", server)
    c.tmp.mkdir(parents=True)
    try:
        for name in ("a", "b"):
            await c.start(name)
        leader = await c.leader()
        follower = c.replicas["b" if leader.name == "a" else "a"]
        async with c.client(leader) as client:
            started = await deploy_service(client, EXAMPLES / "hello-worker", None)
            out["PostgreSQL, the leader"] = await api_rate(client, started.service, n)
        async with c.client(follower) as client:
            out["PostgreSQL, via a follower"] = await api_rate(client, started.service, n)
    finally:
        for replica in c.replicas.values():
            await c.stop(replica)
    return out


async def store_figures(server: PostgresServer, root: Path, n: int) -> dict[str, float]:
    import psycopg

    from fabric.controller.goal_store import SqliteGoalStore
    from fabric.controller.leader import Elector
    from fabric.controller.pg_store import Database, PostgresStore
    from fabric.controller.replica_store import ReplicaStore
    from fabric.controller.store import OperationRecord

    def record(i: int, tag: str) -> OperationRecord:
        return OperationRecord(
            request_id=f"{tag}-{i}", pool="bench", kind="CreateDeployment", target="s/production"
        )

    async def rate(put: Any, tag: str) -> float:
        start = time.perf_counter()
        for i in range(n):
            await put(record(i, tag))
        return n / (time.perf_counter() - start)

    url = await anyio.to_thread.run_sync(server.create_database)
    lite = SqliteGoalStore(root / "fabric.db", "bench")
    pg = await PostgresStore.open(url, "bench")
    db = Database(url, max_connections=2, name="elector")
    await db.open()
    elector = Elector.from_settings(db, "bench", Settings.fast())
    out: dict[str, float] = {}
    async with anyio.create_task_group() as tg:
        await tg.start(elector.run)
        await elector.wait_leading()
        fenced = ReplicaStore(PostgresStore(pg.db, "bench", fence=elector.fence), lambda why: None)
        await rate(pg.put, "warm")  # the server's first writes are slower: not a figure
        # three rounds, interleaved, the best of each (a shared machine's noise is one-sided)
        for k in range(3):
            for j, (name, put) in enumerate(
                (
                    ("SQLite store", lite.put),
                    ("PostgreSQL store", pg.put),
                    ("PostgreSQL store, fenced", fenced.put),
                )
            ):
                out[name] = max(out.get(name, 0.0), await rate(put, f"r{k}s{j}"))
        tg.cancel_scope.cancel()
    await db.aclose()
    await pg.aclose()
    await lite.aclose()

    def raw() -> float:
        best = 0.0
        for _ in range(3):
            best = max(best, raw_once())
        return best

    def raw_once() -> float:
        sql = (
            'INSERT INTO operations ("request_id", "pool", "kind", "target", "status", "http_status_code", '
            '"error_code", "error_message", "description") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) '
            'ON CONFLICT ("request_id") DO UPDATE SET "status" = EXCLUDED."status"'
        )
        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            for i in range(n):
                conn.execute(
                    sql,
                    (f"r-{i}", "bench", "CreateDeployment", "s/production", "InProgress", 200, "", "", ""),
                )
            return n / (time.perf_counter() - start)

    out["raw psycopg upsert"] = await anyio.to_thread.run_sync(raw)
    return out


# -- takeover of N instances -----------------------------------------------------------------------


class TakeoverController(BenchController):
    """BenchController on a store URL; with ``lease``, it leads first (a fenced store)."""

    def __init__(self, state_dir: str, settings: Settings, store_url: str | None, lease: bool) -> None:
        super().__init__(state_dir, settings)
        self.store_url = store_url
        self._lease = lease

    async def on_start(self) -> None:
        if self.store_url and self._lease:
            from fabric.controller.leader import Elector
            from fabric.controller.pg_store import Database

            db = Database(self.store_url, max_connections=2, name="elector")
            await db.open()
            elector = Elector.from_settings(db, f"bench-{os.getpid()}", self.settings)
            self.start_soon(elector.run)
            await elector.wait_leading()
            self.fence, self.on_fenced = elector.fence, elector.resign
            print(f"LEADING {time.time()}", flush=True)
        await super().on_start()


async def spawn(system: Any, state: Path, settings: Settings, tag: str, url: str | None) -> Ref:
    return await system.spawn_process(
        "benchmarks.failover:TakeoverController",
        name=f"controller-{tag}",
        args=(str(state), settings, url, url is not None),
        mailbox_size=100_000,
        options=ProcessOptions(log_path=state.parent / f"controller-{tag}.log", ping_interval=None),
    )


async def takeover(system: Any, root: Path, instances: int, url: str | None, tag: str) -> dict[str, float]:
    hosts = instances // 2
    state = root / f"takeover-{tag}"
    package = root / f"pkg-{tag}"
    write_scale_package(package, DEFINITION, CONFIG.format(count=2))
    cspkg = root / f"takeover-{tag}.cspkg"
    await anyio.to_thread.run_sync(build_package, package, cspkg, package / "config.toml")
    fast = Settings.fast()
    settings = msgspec.structs.replace(
        bench_settings(hosts, 2.5, 30.0),
        leader_lease_duration=fast.leader_lease_duration,
        leader_renew_interval=fast.leader_renew_interval,
        leader_renew_deadline=fast.leader_renew_deadline,
    )
    ctl = await spawn(system, state, settings, f"{tag}-a", url)
    sim_pid = 0
    out: dict[str, float] = {}
    try:
        await deploy_scale(ctl, cspkg, CONFIG.format(count=instances), 600)
        with anyio.fail_after(600):
            while (st := await sim_stats(ctl)).ready < instances:
                await anyio.sleep(0.25)
        sim_pid = st.pid
        await kill_controller(ctl, sim_pid)
        killed = time.time()
        ctl = await spawn(system, state, settings, f"{tag}-b", url)
        started = time.time()  # the new controller answers once it has led and loaded (on_start)
        log = state.parent / f"controller-{tag}-b.log"
        await wait_listed(ctl, instances, 600, 0.05)
        loaded = time.time()
        with anyio.fail_after(600):
            while (st := await sim_stats(ctl)).ready < instances:
                await anyio.sleep(0.1)
        running = st.last_ready
        sim_pid = st.pid
        led = killed
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("LEADING "):
                led = float(line.split()[1])
        out = {"lease_wait": led - killed, "loaded": loaded - led, "running": running - led}
        del started
    finally:
        await kill_controller(ctl, sim_pid)
    return out


async def main(args: Any) -> None:
    reason = missing_reason()
    if reason:
        print(f"failover benchmark skipped: {reason}")
        return
    root = Path(tempfile.mkdtemp(prefix="failover-"))
    print(f"replicated controller benchmark: {os.cpu_count()} cpus, load {load()}", flush=True)
    try:
        with PostgresServer.start(durable=True) as server:
            print("failover (leader SIGKILLed; times from the kill):", flush=True)
            rounds = [] if args.joined_only else await failover(server, root, args.kills)
            joined = await failover_joined(server, root, args.kills)
            user = await failover_joined(server, root, args.kills, kernel=False)
            if args.joined_only:
                _print_joined(joined, user)
                return
            print("operations per second:", flush=True)
            stores = await store_figures(server, root, args.store_ops)
            raw = stores["raw psycopg upsert"]
            for name, value in stores.items():
                print(f"  {name:34} {value:>9,.0f}/s  ({value / raw:.2f}x the raw psycopg upsert)")
            apis = await api_figures(server, root, args.api_ops)
            for name, (ops, rtt) in apis.items():
                print(
                    f"  operation, {name:23} {ops:>9,.1f}/s  (raw GET round trip on that server {rtt:,.0f}/s)"
                )
            print(f"takeover of {args.instances} instances:", flush=True)
            async with open_system() as system:
                url = await anyio.to_thread.run_sync(server.create_database)
                pg = await takeover(system, root, args.instances, url, "pg")
                lite = await takeover(system, root, args.instances, None, "sqlite")
    except BaseException:
        print(f"failed: logs are in {root}", flush=True)
        raise
    shutil.rmtree(root, ignore_errors=True)
    print()
    keys = ("lease", "acting", "api", "site", "lost")
    print("failover, median of", len(rounds), "kills:", ", ".join(f"{k} {_median([r[k] for r in rounds]):.2f}" for k in keys),
          f"(s after the kill; lost = requests; lease {LEASE:g} s is the floor)")  # fmt: skip
    _print_joined(joined, user)
    print(
        f"takeover of {args.instances} instances: PostgreSQL (fenced, lease waited {pg['lease_wait']:.2f} s) "
        f"loaded {pg['loaded']:.2f} s, all ReadyRole {pg['running']:.2f} s after leading; "
        f"SQLite restart loaded {lite['loaded']:.2f} s, all ReadyRole {lite['running']:.2f} s after starting "
        f"({pg['loaded'] / lite['loaded']:.2f}x, {pg['running'] / lite['running']:.2f}x); load {load()}"
    )


def _print_joined(kernel: list[dict[str, float]], user: list[dict[str, float]]) -> None:
    for name, rounds in (("kernel path (as root)", kernel), ("user-space path", user)):
        each = ", ".join(f"{r['lost']:.0f} of {r['sent']:.0f}" for r in rounds)
        print(
            f"failover with joined hosts, {name}, median of {len(rounds)} kills: acting "
            f"{_median([r['acting'] for r in rounds]):.2f} s, requests lost "
            f"{_median([r['lost'] for r in rounds]):.0f} (each kill: "
            f"{each} at 20/s, a new connection "
            f"each); instances kept in {sum(int(r['same']) for r in rounds)} of {len(rounds)} kills"
        )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def cli() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one kill, 200 instances, fewer operations")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--api-ops", type=int, default=100)
    parser.add_argument("--store-ops", type=int, default=1000)
    parser.add_argument(
        "--joined-only", action="store_true", help="only the failovers with joined hosts (both data paths)"
    )
    args = parser.parse_args()
    if args.quick:
        args.kills, args.instances, args.api_ops, args.store_ops = 1, 200, 30, 300
    anyio.run(main, args, backend="trio")


if __name__ == "__main__":
    cli()
