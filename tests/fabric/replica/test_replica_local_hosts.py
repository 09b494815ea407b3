"""Local hosts of replicated controllers: started by the leader on its machine, detached, they
outlive it. The leader SIGKILLed: every instance keeps its processes, the site answers while
nobody leads, and the new leader adopts them; a replica started again on the machine starts no
second copy; the last replica stopped stops them all, and a plain fabric on the folder stops
those a killed last replica left."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import anyio
import psutil
import pytest

from fabric.client.deployments import deploy_service
from tests.fabric.replica.replica_kit import FABRIC, Cluster, alive, cluster, eventually
from tests.fabric.replica.test_replica_joined import Load, step
from tests.paths import EXAMPLES
from tests.pg_server import PostgresServer

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

LEASE = 3.0


def agents(c: Cluster) -> dict[int, set[int]]:
    """Each running local host agent of the cluster's folder (by pid) with its process tree."""
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if "fabric.replica.local_hosts" in argv and argv[-1].startswith(str(c.state)):
            try:
                found[process.pid] = {p.pid for p in process.children(recursive=True)}
            except psutil.NoSuchProcess:
                continue
    return found


def role_processes(c: Cluster) -> set[int]:
    """The web role processes (WaWebHost) under the replicas and the local host agents."""
    roots = [r.pid for r in c.replicas.values()] + list(agents(c))
    found = set()
    for root in roots:
        try:
            tree = psutil.Process(root).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            with contextlib.suppress(psutil.Error):
                if "WaWebHost" in " ".join(process.cmdline()):  # its title (set by the role host)
                    found.add(process.pid)
    return found


async def test_local_hosts_outlive_a_killed_leader_and_stop_with_the_last_replica(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    async with cluster(tmp_path, postgres) as c:
        with step("replicas a and b serving, one leading", 90):
            old, other = await c.two()
        async with c.client(other) as client:
            current = client
            with step("the deployment ReadyRole", 120):
                shown = await deploy_service(client, EXAMPLES / "hwc-wsgi", None)

                async def ready() -> object:
                    view = await current.deployment(shown.service, "production")
                    statuses = [i.status for i in view.instances]
                    return view if statuses == ["ReadyRole"] * 2 else None

                view = await eventually(ready, 110, "2 instances ReadyRole")
            roles = role_processes(c)
            assert len(roles) == 2, roles
            endpoint = view.endpoints[0]
            # (it opens with the instances the views show Ready then: one, or both)
            with step(f"{other.name}'s standby balancer serving the site", 30):
                await c.wait_output(
                    other, rf"standby balancer on {endpoint.host}:{endpoint.port}: \d+ instance"
                )
            load = Load(f"http://{endpoint.host}:{endpoint.port}/")
            async with anyio.create_task_group() as tg:
                tg.start_soon(load.run)
                with step("the site answering", 30):
                    while load.ok == 0:
                        await anyio.sleep(0.05)
                old.process.send_signal(signal.SIGKILL)
                await old.process.wait()
                killed, answered = time.monotonic(), load.ok
                with step(f"a replica other than {old.name} leading", LEASE + 35):
                    new = await c.leader(not_=old.name, seconds=LEASE + 30)
                # nobody led meanwhile: the follower's standby balancer served the instances
                leaderless = load.ok - answered
                with step("2 instances ReadyRole under the new leader", 60):
                    view = await eventually(ready, 55, "2 instances ReadyRole")
                failed_then = len(load.failed)
                tg.cancel_scope.cancel()
            assert role_processes(c) == roles  # the same processes: nothing restarted
            assert all(i.restarts == 0 for i in view.instances), view.instances
            assert leaderless > 0, (leaderless, load.failed[:5])
            when = [f"{float(f.split()[0]) - killed:+.2f} {f.split()[1]}" for f in load.failed]
            print(
                f"{new.name} leads; the site answered {leaderless} requests while nobody led; "
                f"{failed_then} failed (s after the kill): {when}"
            )
        # The killed replica started again, and the leader stopped (SIGTERM; not the last
        # replica: its hosts and their VMs stay): the restarted one leads and adopts the same
        # hosts, starting no second copy.
        hosts = agents(c)
        again = await c.start(old.name)
        await c.stop(new)
        with step(f"the restarted {old.name} leading", LEASE + 35):
            await c.leader(not_=new.name, seconds=LEASE + 30)
        async with c.client(again) as current:
            with step("2 instances ReadyRole under the restarted replica", 60):
                view = await eventually(ready, 55, "2 instances ReadyRole")
        assert set(agents(c)) == set(hosts) and len(hosts) == 2, (agents(c), hosts)
        assert role_processes(c) == roles and all(i.restarts == 0 for i in view.instances)
        every = set(hosts).union(*hosts.values())
    # the cluster's end stopped both replicas (SIGTERM): the last one stopped the local hosts
    assert not alive(every), sorted(alive(every))
    assert not agents(c)


async def test_a_plain_fabric_stops_the_local_hosts_a_killed_last_replica_left(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    every: set[int] = set()
    try:
        async with cluster(tmp_path, postgres) as c:
            only = await c.start("a")
            await c.leader()
            async with c.client(only) as client:
                with step("the deployment running", 120):
                    await deploy_service(client, EXAMPLES / "hello-worker", None)
            hosts = agents(c)
            every = set(hosts).union(*hosts.values())
            assert len(hosts) == 1, hosts
            only.process.send_signal(signal.SIGKILL)  # the last replica, killed: nobody stops them
            await only.process.wait()
            assert set(agents(c)) == set(hosts)  # they wait for a leader
        out = tmp_path / "plain.log"
        with out.open("wb") as log:
            plain = await anyio.open_process(
                [FABRIC, "serve", "--fast", "--state-dir", str(c.state)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            with step("fabric serve on the folder serving", 60):
                while "fabric serving" not in out.read_text():
                    assert plain.returncode is None, out.read_text()
                    await anyio.sleep(0.1)
            # it stopped them before it started its own local hosts
            assert not alive(every), (sorted(alive(every)), out.read_text())
            assert "left by replicas of this folder" in out.read_text(), out.read_text()
        finally:
            plain.send_signal(signal.SIGTERM)
            with anyio.fail_after(60):
                await plain.wait()
    finally:
        for pid in alive(every):  # a failure above leaves nothing behind either
            os.kill(pid, signal.SIGKILL)
