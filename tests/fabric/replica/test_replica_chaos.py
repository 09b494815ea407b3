"""`fabric chaos replica kill|hang` and `fabric chaos database` against real replicas and a real
PostgreSQL server, then a scenario whose step kills the leader (fabric.chaos.control)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import anyio
import pytest

from fabric.chaos.report import render
from fabric.chaos.runner import Run, run_on
from fabric.chaos.scenario import parse_scenario
from fabric.client.deployments import deploy_service
from tests.fabric.replica.replica_kit import FABRIC, cluster
from tests.paths import EXAMPLES
from tests.pg_server import PostgresServer

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

LEASE = 3.0


async def chaos(*args: str) -> tuple[int, str, str]:
    with anyio.fail_after(120):
        done = await anyio.run_process([FABRIC, "chaos", *args], check=False)
    return done.returncode, done.stdout.decode().strip(), done.stderr.decode().strip()


def pg_command(server: PostgresServer, *argv: str) -> str:
    cmd = [str(server.bindir / argv[0]), *argv[1:]]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return shlex.join(cmd)


async def test_chaos_kills_and_hangs_replicas_and_restarts_the_database(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    async with cluster(tmp_path, postgres) as c:
        await c.start("a")
        await c.start("b")
        state = str(c.state)
        code, _, err = await chaos("replica", "kill", "--replica", "zed", "--state-dir", state)
        assert code == 2 and len(err.splitlines()) == 1 and "zed" in err, err

        first = await c.leader()
        code, out, err = await chaos("replica", "kill", "--replica", "leader", "--state-dir", state)
        assert code == 0, err
        assert out == f"replica {first.name} (the leader, pid {first.pid}) killed", out
        second = await c.leader(not_=first.name, seconds=LEASE + 30)
        await c.stop(first)
        await c.start(first.name)  # it follows

        offset = len(second.output())
        args = ["replica", "hang", "--replica", "leader", "--duration", str(LEASE + 3), "--state-dir", state]
        code, out, err = await chaos(*args)
        assert code == 0 and out.startswith(f"replica {second.name} (the leader"), (out, err)
        await c.wait_output(second, rf"replica {second.name} follows", after=offset)
        third = await c.leader(not_=second.name)
        assert third.name == first.name

        # A scenario step kills the leader the runner's client talks to (<state>/api names it):
        # the run follows the API to the other replica, watches again on the new leader, and
        # reports the requests lost meanwhile.
        async with c.client(third) as client:
            started = await deploy_service(client, EXAMPLES / "hwc-wsgi", None)
        scenario = parse_scenario(SCENARIO)
        report = await run_on(c.state, Run(scenario=scenario, scenario_file="replica.toml", seed=1))
        print(render(report))
        [kill] = report.faults
        assert (kill.kind, kill.outcome) == ("replica-kill", "applied"), kill
        assert kill.detail.startswith(f"replica {third.name} (the leader, pid {third.pid}) killed"), kill
        assert report.status == "completed" and report.recovery is not None, render(report)
        # The instance on the killed leader's local host outlives it (the host agent is not the
        # replica's child): the standby balancers, then the new leader's, go on serving it, so
        # few requests or none are lost. The instances' availability is sampled by the runner
        # through the API, which has no leader for a while: it must end whole.
        assert report.steady_state["after"].held, render(report)
        assert report.availability[-1][1] == 1.0, report.availability
        assert (await c.leader()).name != third.name and started.service

        stop = pg_command(postgres, "pg_ctl", "-D", str(postgres.data), "-m", "fast", "-w", "stop")
        start = pg_command(
            postgres, "pg_ctl", "-D", str(postgres.data), "-l", str(postgres.log), "-w", "start"
        )
        code, out, err = await chaos(
            "database", "--stop-command", stop, "--start-command", start, "--duration", "1"
        )
        assert code == 0 and out.startswith("database stopped"), (out, err)
        # a leader acts again once the database is back (the fast profile's lease may have lapsed)
        await c.leader(seconds=60)


SCENARIO = """
title = "the leader killed under load"
duration = 4
[steady_state]
before = 1
after = 1
[[steady_state.probes]]
type = "http-success-rate"
tolerance = { min = 0.95 }
phases = ["before", "after"]
[[steady_state.probes]]
type = "instances-ready"
[[method]]
fault = "replica-kill"
replica = "leader"
at = 0.5
"""


def test_control_plane_steps_are_planned_from_the_seed_and_checked() -> None:
    from fabric.chaos.control import plan_control
    from fabric.chaos.scenario import ScenarioError

    text = (
        'title = "t"\nduration = 10\n[[method]]\nfault = "replica-hang"\nreplica = "follower"\nrate = 0.5\n'
    )
    scenario = parse_scenario(text)
    first = plan_control(scenario, 7, 3)
    assert first == plan_control(scenario, 7, 3) != plan_control(scenario, 8, 3)
    assert [p.n for p in first] == list(range(4, 4 + len(first))) and first
    assert all(p.fault.replica == "follower" and p.fault.duration == pytest.approx(10 - p.at) for p in first)
    for bad, said in (
        ('fault = "database-restart"', "stop_command"),
        ('fault = "replica-kill"\nreplica = "no/such"', "replica must be"),
    ):
        with pytest.raises(ScenarioError, match=said) as refused:
            parse_scenario(f'title = "t"\n[[method]]\n{bad}\n')
        assert len(str(refused.value).splitlines()) == 1
