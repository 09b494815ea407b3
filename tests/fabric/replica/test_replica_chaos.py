"""`fabric chaos replica kill|hang` and `fabric chaos database` against real replicas and a real
PostgreSQL server."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import anyio
import pytest

from tests.fabric.replica.replica_kit import FABRIC, cluster
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
