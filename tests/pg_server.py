"""A real PostgreSQL server in a temporary folder, for tests and benchmarks.

Debian's ``postgresql`` package brings the binaries (``/usr/lib/postgresql/*/bin``; ``.ci/run``
installs it). initdb refuses to run as root, so as root the folder belongs to the ``postgres``
user the package creates and every server command runs through ``runuser -u postgres --``.
The server listens on 127.0.0.1 on a free port, its unix socket in the folder, with trust
authentication for the superuser ``fabric``::

    with PostgresServer.start() as server:   # stops it and removes the folder, even on failure
        url = server.create_database()       # postgresql://fabric@127.0.0.1:PORT/db1
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

USER = "fabric"


def find_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here (one line), or None when it can."""
    if find_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql; .ci/run does it as root)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root without runuser (util-linux) to run initdb as postgres"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e .)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One server; use :meth:`start` (a context manager)."""

    def __init__(self, folder: Path, bindir: Path, port: int) -> None:
        self.folder = folder
        self.bindir = bindir
        self.port = port
        self.data = folder / "data"
        self.log = folder / "server.log"
        self._databases = 0

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database (for administration)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd, check=check, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    @classmethod
    @contextlib.contextmanager
    def start(cls, *, durable: bool = False) -> Iterator[PostgresServer]:
        """initdb, start, yield, stop and remove the folder (whatever happens inside).

        Args:
            durable: keep fsync on (benchmarks); tests turn it off (a clean restart loses nothing
                either way, and it saves seconds).
        """
        bindir = find_bin()
        if bindir is None:
            raise RuntimeError(missing_reason() or "no PostgreSQL")
        folder = Path(tempfile.mkdtemp(prefix="reddog-pg-"))
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(folder, pg.pw_uid, pg.pw_gid)
        server = cls(folder, bindir, _free_port())
        try:
            server._run(
                "initdb", "-D", str(server.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C",
                "--no-sync",
            )  # fmt: skip
            conf = [
                "listen_addresses = '127.0.0.1'",
                f"port = {server.port}",
                f"unix_socket_directories = '{folder}'",
                "max_connections = 100",
                "shared_buffers = '32MB'",
            ]
            if not durable:
                conf += ["fsync = off", "full_page_writes = off"]
            with (server.data / "postgresql.auto.conf").open("a") as f:
                f.write("\n".join(conf) + "\n")
            server.start_server()
            yield server
        finally:
            server.stop_server()
            shutil.rmtree(folder, ignore_errors=True)

    def start_server(self) -> None:
        """Start (again) and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")

    def stop_server(self, mode: str = "fast") -> None:
        """Stop it (no-op when it is not running); SIGKILL the postmaster if pg_ctl cannot."""
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return
        done = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "20", "stop", check=False)
        if done.returncode != 0 and pidfile.exists():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
                time.sleep(0.5)

    def restart_server(self) -> None:
        """``pg_ctl restart`` (fast mode: sessions are cut, committed data stays)."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t", "30", "restart"
        )

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        self._databases += 1
        name = f"db{self._databases}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"
