"""Controller replicas as real `fabric serve --replica` processes sharing a state folder and a
real PostgreSQL database, and ways to look at them (the lease row, each one's log, a client
pointed at one replica)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import psutil

from fabric.client import AsyncFabricClient
from fabric.frontend.auth import read_token, write_api_url, write_token
from tests.pg_server import PostgresServer

FABRIC = str(Path(sys.executable).with_name("fabric"))
T = TypeVar("T")

#: a goal-state write by a replica leaves a row here (the trigger runs in the write's own
#: transaction: a write refused by the fence leaves none)
AUDIT = """
CREATE TABLE IF NOT EXISTS test_audit (id bigserial PRIMARY KEY, app text NOT NULL, tbl text NOT NULL);
CREATE OR REPLACE FUNCTION test_audit_fn() RETURNS trigger AS $$
BEGIN
  INSERT INTO test_audit (app, tbl) VALUES (current_setting('application_name'), TG_TABLE_NAME);
  RETURN NULL;
END $$ LANGUAGE plpgsql;
"""
GOAL_TABLES = ("deployments", "generations", "instances", "hosts", "operations", "public_ports")


@dataclass
class Replica:
    """One `fabric serve --replica NAME` process."""

    name: str
    process: anyio.abc.Process
    log: Path
    url: str = ""
    pids: set[int] = field(default_factory=set)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.process.pid


class Cluster:
    """Replicas of one fabric: a shared state folder, one database."""

    def __init__(self, tmp: Path, server: PostgresServer, settings: Path | None = None) -> None:
        self.tmp = tmp
        self.server = server
        self.db_url = server.create_database()
        self.state = tmp / "state"
        self.settings = settings
        self.replicas: dict[str, Replica] = {}

    async def start(self, name: str, *extra: str) -> Replica:
        """Start replica ``name`` (``extra``: more options of fabric serve); returns once its API
        answers (its URL read from its output)."""
        log = self.tmp / f"replica-{name}.log"
        offset = log.stat().st_size if log.exists() else 0  # a restarted replica appends
        argv = [FABRIC, "serve", "--fast", "--store", self.db_url, "--replica", name]
        argv += ["--state-dir", str(self.state)]
        if self.settings is not None:
            argv += ["--settings", str(self.settings)]
        argv += extra
        with log.open("ab") as out:
            process = await anyio.open_process(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        replica = self.replicas[name] = Replica(name, process, log)
        line = await self.wait_output(replica, rf"replica {name} serving (https?://\S+)", after=offset)
        replica.url = line.group(1)
        return replica

    async def wait_output(
        self, replica: Replica, pattern: str, seconds: float = 60.0, after: int = 0
    ) -> re.Match[str]:
        """The first match of ``pattern`` in the replica's output past offset ``after``."""
        with anyio.fail_after(seconds):
            while True:
                found = re.search(pattern, replica.output()[after:])
                if found:
                    return found
                if replica.process.returncode is not None:
                    raise AssertionError(f"replica {replica.name} exited:\n{replica.output()[-3000:]}")
                await anyio.sleep(0.1)

    def client(self, replica: Replica) -> AsyncFabricClient:
        """A client of this replica's address (with the fabric's token)."""
        folder = self.tmp / f"client-{replica.name}"
        folder.mkdir(exist_ok=True)
        write_api_url(folder, replica.url)
        write_token(folder, read_token(self.state) or "")
        ca = self.state / "cluster" / "ca.pem"
        if ca.exists():  # the CA a replica's https:// address is verified with (fabric.client.tls)
            shutil.copy(ca, folder / "ca.pem")
        return AsyncFabricClient(folder, timeout=30.0)

    async def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        """Rows of a query on the fabric's database (autocommit)."""
        import psycopg
        from psycopg.rows import dict_row

        def run() -> list[dict[str, Any]]:
            with psycopg.connect(self.db_url, autocommit=True, row_factory=dict_row) as conn:
                cursor = conn.execute(query, args or None)
                return cursor.fetchall() if cursor.description else []

        return await anyio.to_thread.run_sync(run)

    async def lease(self) -> dict[str, Any] | None:
        """The controller lease row (holder, epoch, live by the database's clock)."""
        rows = await self.sql(
            "SELECT holder, epoch, expires_at > now() AS live FROM fabric_leases WHERE name = 'controller'"
        )
        return rows[0] if rows else None

    async def two(self, *extra: str) -> tuple[Replica, Replica]:
        """Start replicas a and b (``extra``: more options of both); the one that leads, then the other."""
        await self.start("a", *extra)
        await self.start("b", *extra)
        leader = await self.leader()
        return leader, self.replicas["b" if leader.name == "a" else "a"]

    async def leader(self, seconds: float = 30.0, not_: str | None = None) -> Replica:
        """The replica holding a live lease (other than ``not_``) once it acts as leader."""
        with anyio.fail_after(seconds):
            while True:
                row = await self.lease()
                if row and row["live"] and row["holder"] != not_ and row["holder"] in self.replicas:
                    replica = self.replicas[row["holder"]]
                    text = replica.output()
                    acting = text.rfind(f"acting as leader (epoch {row['epoch']})")
                    # not one whose term ended while its lease row lives on (the database away)
                    if acting >= 0 and f"replica {replica.name} stops leading" not in text[acting:]:
                        return replica
                await anyio.sleep(0.05)

    async def audit(self) -> None:
        """From now on every goal-state write is recorded with the writer's application name."""
        statements = [AUDIT] + [
            f"CREATE TRIGGER test_audit_{t} AFTER INSERT OR UPDATE OR DELETE ON {t} "
            "FOR EACH STATEMENT EXECUTE FUNCTION test_audit_fn()"
            for t in GOAL_TABLES
        ]
        for statement in statements:
            await self.sql(statement)

    async def writes_by(self, name: str) -> int:
        """How many goal-state write statements replica ``name`` made since audit()."""
        rows = await self.sql("SELECT count(*) AS n FROM test_audit WHERE app = %s", f"fabric-replica-{name}")
        return int(rows[0]["n"])

    async def stop(
        self, replica: Replica, how: signal.Signals = signal.SIGTERM, seconds: float = 60.0
    ) -> None:
        """Signal a replica and wait for it (SIGKILL past ``seconds``)."""
        process = replica.process
        if process.returncode is None:
            with _gone():
                os.kill(process.pid, signal.SIGCONT)
            process.send_signal(how)
        with anyio.move_on_after(seconds, shield=True) as scope:
            await process.wait()
        if scope.cancelled_caught:
            process.kill()
            with anyio.move_on_after(10, shield=True):
                await process.wait()
        await process.aclose()

    def descendants(self, replica: Replica) -> set[int]:
        """The pids of the replica's process tree now (remembered on the replica too)."""
        try:
            found = {p.pid for p in psutil.Process(replica.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            found = set()
        replica.pids |= found
        return found


class _gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return kind is ProcessLookupError


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def stop_all(processes: Iterable[subprocess.Popen[bytes]], seconds: float = 60.0) -> None:
    """SIGTERM each process (resumed if stopped), then wait for them all (``seconds`` in all,
    not each: then SIGKILL)."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            with _gone():
                os.kill(process.pid, signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + seconds
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@asynccontextmanager
async def cluster(tmp: Path, server: PostgresServer, settings: Path | None = None) -> AsyncIterator[Cluster]:
    """A cluster whose replicas are all stopped at the end (and every process they started)."""
    c = Cluster(tmp, server, settings)
    try:
        yield c
    finally:
        for replica in c.replicas.values():
            c.descendants(replica)
        for replica in list(c.replicas.values()):
            await c.stop(replica)
        with anyio.move_on_after(30, shield=True):
            while alive({p for r in c.replicas.values() for p in r.pids}):
                await anyio.sleep(0.1)
        left = alive({p for r in c.replicas.values() for p in r.pids})
        for pid in left:
            with _gone():
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind: {sorted(left)}"


async def eventually(check: Callable[[], Awaitable[T | None]], seconds: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy."""
    with anyio.fail_after(seconds):
        while True:
            found = await check()
            if found:
                return found
            await anyio.sleep(0.1)
