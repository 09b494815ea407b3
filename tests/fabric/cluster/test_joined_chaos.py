"""Chaos process faults on instances of a joined host, for real: a `fabric serve --listen` and a
`fabric host join` on a loopback alias; `fabric chaos kill` of a role host there kills it on that
host (its bootstrapper restarts it, the instance serves again), `hang` stops it there until the
rollback; both are on the fabric's timeline as locally."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from fabric.client.deployments import deploy_service
from fabric.controller.chaos.messages import Hang, Inject, Target
from fabric.host.processes import Proc, scan
from tests.fabric.cluster.joined_kit import FABRIC, SPREAD, cluster, poll
from tests.integration.e2e_kit import copy_service
from tests.netns import loopback_hosts

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def role_host(join: subprocess.Popen[bytes], instance: str) -> Proc | None:
    """The role host of ``instance`` among the join process's descendants (on that host)."""
    found = [
        p
        for p in scan(join.pid).procs
        if p.place == "role-host" and p.instance.rsplit(".", 1)[-1] == instance
    ]
    return found[0] if found else None


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def served(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def test_kill_and_hang_a_role_host_on_a_joined_host(tmp_path: Path) -> None:
    with loopback_hosts(1, tmp_path / "hosts") as hosts:
        async with cluster(hosts, tmp_path) as c:
            await c.start_controller()
            await c.make_token()
            join = c.join(hosts[0], fault_domain=0)
            await c.wait_hosts({"h1"})
            async with c.client() as client:
                await deploy_service(client, copy_service(SPREAD, tmp_path, count=1), None)
            view = await c.all_ready(count=2)
            assert {i.host for i in view.instances} == {"h1"}
            url = f"http://{view.endpoints[0].host}:{view.endpoints[0].port}/"
            before = await anyio.to_thread.run_sync(role_host, join, "Hello_IN_0")
            assert before is not None and await served(url)

            kill = ["chaos", "kill", "--target", "role-host", "--instance", "Hello_IN_0", "--json"]
            killed = await anyio.run_process([FABRIC, *kill, "--state-dir", str(c.state)], check=False)
            assert killed.returncode == 0, killed.stderr.decode()
            record = json.loads(killed.stdout)
            [hit] = record["hits"]
            # the role host that ran on h1, by its pid there
            assert (hit["pid"], hit["name"], hit["host"], hit["instance"]) == (
                before.pid,
                "WaWebHost",
                "h1",
                "Hello_IN_0",
            )
            assert record["detail"] == f"SIGKILL WaWebHost (pid {before.pid}) on host h1"
            await poll(lambda: gone(before.pid), 10, "the role host killed on h1")

            # restarted on h1 by its bootstrapper, and served again through the load balancer
            def restarted() -> Proc | None:
                again = role_host(join, "Hello_IN_0")
                return again if again is not None and again.pid != before.pid else None

            await poll(lambda: anyio.to_thread.run_sync(restarted), 60, "a new role host on h1")
            await poll(lambda: served(url), 60, "Hello_IN_0 served again")
            await c.all_ready(count=2)

            async with c.client() as client:
                # hang: stopped on h1 until the rollback, then running again
                worker = await anyio.to_thread.run_sync(role_host, join, "Worker_IN_0")
                assert worker is not None
                hang = await client.inject(
                    Inject(fault=Hang(target=Target(place="role-host", instance="Worker_IN_0")))
                )
                assert hang.state == "active" and [h.pid for h in hang.hits] == [worker.pid]
                # a signal takes effect when its target next runs: on a loaded machine, a moment later
                await poll(lambda: stopped(worker.pid), 10, "the worker stopped by the hang")
                [undone] = await client.undo(hang.id)
                assert (
                    undone.state == "undone" and f"SIGCONT WaWorkerHost (pid {worker.pid})" in undone.detail
                )
                await poll(lambda: not stopped(worker.pid), 10, "the worker running again after the undo")

                # on the timeline, under the instance, as a local fault is
                page = await client.events({"kind": "fault"})
                messages = [(e.instance, e.fault, e.status, e.message) for e in page.events]
                assert (
                    "Hello_IN_0",
                    "kill",
                    "done",
                    f"fault {record['id']} kill role-host@Hello_IN_0: {record['detail']}",
                ) in messages, messages
                assert [m for m in messages if m[0] == "Worker_IN_0" and m[2] == "undone"], messages


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP taken effect)."""
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED
