"""Chaos on a joined host's own processes, for real (a `fabric serve --listen` and a `fabric host
join` on a loopback alias): `fabric chaos targets` lists that host's processes as it sees them;
a hang of a VM's role host there ends at its end even while no controller runs (the host's own
timer); a hang of the whole host ends when undone (a backstop of the host's asks the join port);
a kill of its agent kills the `fabric host join` process."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import anyio
import psutil
import pytest

from fabric.client.deployments import deploy_service
from fabric.controller.chaos.messages import Hang, Inject, Target
from tests.fabric.cluster.joined_kit import FABRIC, SPREAD, Cluster, cluster, one_joined_host, poll
from tests.integration.e2e_kit import copy_service
from tests.netns import loopback_hosts

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def stopped(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    except psutil.NoSuchProcess:
        return False


def running(pid: int) -> bool:
    """The same process goes on (resumed, not restarted in its place)."""
    status = psutil.Process(pid).status()  # NoSuchProcess: it was replaced
    return bool(status not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE))


def any_stopped(root: int) -> bool:
    """Whether a process under ``root`` is stopped."""
    for proc in psutil.Process(root).children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_STOPPED:
                return True
        except psutil.NoSuchProcess:
            continue
    return False


async def chaos(c: Cluster, *argv: str) -> dict[str, object]:
    done = await anyio.run_process(
        [FABRIC, "chaos", *argv, "--json", "--state-dir", str(c.state)], check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    found: dict[str, object] = json.loads(done.stdout.splitlines()[0])
    return found


async def test_chaos_on_a_joined_hosts_own_processes(tmp_path: Path) -> None:
    with loopback_hosts(1, tmp_path / "hosts") as hosts:
        # A role host stopped is not restarted as unresponsive meanwhile.
        async with cluster(hosts, tmp_path, role_unresponsive_timeout=120.0) as c:
            await one_joined_host(c)
            join = c.joins["h1"]
            async with c.client() as client:
                await deploy_service(client, copy_service(SPREAD, tmp_path, count=1), None)
            await c.all_ready(count=2)

            # targets: h1's processes as h1 lists them, over its link
            found = await chaos(c, "targets")
            assert [(h["id"], h["pid"]) for h in found["hosts"]] == [("h1", join.pid)]  # type: ignore[index]
            procs = {(p["host"], p["place"], p["instance"]): p["pid"] for p in found["processes"]}  # type: ignore[index]
            assert procs[("h1", "host-agent", "")] == join.pid
            worker = procs[("h1", "role-host", "Worker_IN_0")]
            assert psutil.Process(worker).parent() is not None  # a real process of h1
            by_id = {i["id"]: i for i in found["instances"]}  # type: ignore[index]
            assert by_id["Worker_IN_0"]["processes"]["role-host"] == worker

            # a VM's hang ends on h1 at its end, though the controller is frozen meanwhile
            async with c.client() as client:
                target = Target(place="role-host", instance="Worker_IN_0")
                hang = await client.inject(Inject(fault=Hang(target=target, duration=1.0)))
            assert [h.pid for h in hang.hits] == [worker], hang
            await poll(lambda: stopped(worker), 10, "h1's role host stopped")
            assert c.serve is not None
            c.serve.send_signal(signal.SIGSTOP)
            try:
                await poll(lambda: running(worker), 30, "h1 resuming its role host by itself")
            finally:
                c.serve.send_signal(signal.SIGCONT)

            # the whole host hung for 5 minutes: stopped, then resumed by h1 itself as soon as the
            # hang is undone (its backstop asks the join port), long before its end
            await c.wait_hosts({"h1"})
            record = await chaos(c, "hang", "--target", "host", "--host", "h1", "--duration", "300")
            assert "it resumes them itself in 300 s, or when undone" in str(record["detail"]), record
            await poll(lambda: stopped(join.pid) and stopped(worker), 20, "h1 stopped whole")
            async with c.client() as client:
                [undone] = await client.undo(str(record["id"]))
            assert undone.state == "undone" and "its backstop asks the join port" in undone.detail, undone
            # (its VMs' watchdog may restart what was stopped: nothing stays stopped)
            await poll(lambda: running(join.pid) and not any_stopped(join.pid), 30, "h1 resumed whole")

            # kill its agent: the `fabric host join` process goes
            await c.wait_hosts({"h1"})
            record = await chaos(c, "kill", "--target", "host-agent", "--host", "h1")
            assert record["hits"][0]["pid"] == join.pid  # type: ignore[index]
            await poll(lambda: join.poll() == -signal.SIGKILL, 20, "h1's agent killed")
