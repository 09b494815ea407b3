"""A replicated controller's local hosts: host agents on a replica's machine that outlive it.

A single fabric runs its local hosts as its own children: they die with it. A replica's leader
must not take them along (a host keeps its VMs running while no leader exists), so while a
fabric runs as replicas its local hosts are detached: the leader that first needs
``local-host<n>`` starts ``python -m fabric.replica.local_hosts FOLDER`` in a session of its
own, reparented away from the replica (no death signal), under ``<state>/hosts/<id>``. It runs
the joined host's code (fabric.cluster.node) with a certificate the leader signs itself from the
cluster CA (no token), links to whichever replica leads (every replica's host port, as a joined
host does), and is adopted by the next leader with its VMs and their pids. The controller treats
it as a joined host on the replica's address (fabric.controller.hosts: a pool with a launcher).

The agent holds ``agent.lock`` in its folder for its life: a second start of the same host (a
replica restarted on the machine, another leader asking) finds it taken and exits at once, so
there is never a duplicate. The last replica of the folder to stop (it alone takes
``fabric.lock`` exclusively once it let its shared lock go) stops them all with SIGTERM (each
stops its VMs gracefully) and waits for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import psutil  # type: ignore[import-untyped]

from fabric.cluster.ca import ClusterCA
from fabric.cluster.node import Identity, JoinState
from fabric.cluster.port import cluster_dir
from fabric.host.messages import HostConfig

log = logging.getLogger("fabric.replica")

#: held by a running local host agent (its pid inside)
LOCK = "agent.lock"
#: how long a launched agent may take to take its lock and say so
LAUNCH_TIMEOUT = 30.0


def folder_of(state_dir: Path, host_id: str) -> Path:
    """The state folder of local host ``host_id`` (its identity, VMs, packages, logs)."""
    return state_dir / "hosts" / host_id


def open_ca(state_dir: Path) -> ClusterCA:
    """The cluster CA, made once even when replicas start together (a lock beside it)."""
    folder = cluster_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "ca.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return ClusterCA.open(folder)
    finally:
        os.close(fd)


def provision(
    state_dir: Path, config: HostConfig, advertise: str, controllers: list[str], lifetime: float
) -> Identity:
    """The host's identity in its folder: a key made there, a certificate for its id signed by
    the cluster CA, and join.json naming every replica's host port (blocking)."""
    identity = Identity(folder_of(state_dir, config.host_id))
    ca = open_ca(state_dir)
    key = identity.private_key()
    cert = ca.sign(key.public_key(), config.host_id, lifetime)
    host, _, port = controllers[0].rpartition(":")
    state = JoinState(
        name=config.host_id,
        controller=host.strip("[]"),
        host_port=int(port),
        join_port=int(port) + 1,
        cores=config.cores,
        fault_domain=config.fault_domain,
        address=advertise,
        controllers=controllers,
    )
    identity.save(cert.decode(), ca.cert_pem.decode(), state)
    return identity


def running(folder: Path) -> int:
    """The pid of the agent holding ``folder``'s lock; 0 when none runs."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        return 0
    finally:
        os.close(fd)


def launch(folder: Path) -> None:
    """Start the agent of ``folder`` detached (blocking until the launcher forked it away).

    Raises:
        OSError: the launcher could not run, or failed.
    """
    log_file = folder / "host.out.log"
    env = dict(os.environ)
    # the code this replica runs, wherever it was imported from (as actors' children get it)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, env.get("PYTHONPATH", "")] if p)
    with open(log_file, "ab", buffering=0) as out:
        launcher = subprocess.run(
            [sys.executable, "-m", "fabric.replica.local_hosts", str(folder)],
            env=env,
            cwd=folder,  # not the replica's: `python -m` puts its folder first on the path
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # a Ctrl-C or SIGHUP meant for the replica is not the host's
            timeout=LAUNCH_TIMEOUT,
            check=False,
        )
    if launcher.returncode != 0:
        raise OSError(f"the local host launcher failed (exit {launcher.returncode}); see {log_file}")


async def start(
    state_dir: Path, config: HostConfig, advertise: str, controllers: list[str], lifetime: float
) -> None:
    """Make sure local host ``config.host_id`` runs (started detached unless it already does)."""
    folder = folder_of(state_dir, config.host_id)
    pid = await anyio.to_thread.run_sync(running, folder)
    if pid:
        log.info("local host %s runs (pid %d): waiting for it to link", config.host_id, pid)
        return
    await anyio.to_thread.run_sync(provision, state_dir, config, advertise, controllers, lifetime)
    await anyio.to_thread.run_sync(launch, folder)
    log.info("local host %s started detached (it outlives this replica)", config.host_id)


def all_running(state_dir: Path) -> dict[Path, int]:
    """Every local host agent of the folder that runs, by folder (blocking)."""
    found: dict[Path, int] = {}
    with contextlib.suppress(FileNotFoundError):
        for folder in (state_dir / "hosts").iterdir():
            pid = running(folder)
            if pid > 0:
                found[folder] = pid
    return found


def stop_all(state_dir: Path, timeout: float) -> list[str]:
    """SIGTERM every local host agent of the folder and wait up to ``timeout`` seconds for them
    and every process under them (then SIGKILL); returns a line for each (blocking)."""
    agents = all_running(state_dir)
    tree: list[psutil.Process] = []
    lines = []
    for folder, pid in agents.items():
        with contextlib.suppress(psutil.Error):
            agent = psutil.Process(pid)
            tree += [agent, *agent.children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # one stopped by chaos must hear the SIGTERM
            os.kill(pid, signal.SIGTERM)
        lines.append(f"local host {folder.name} (pid {pid}) stopping")
    # Its VMs stop first, gracefully, then the agent: the last of them may still be exiting
    # when the agent is gone.
    left = _wait_gone(tree, timeout)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
            lines.append(f"process {process.pid} of a local host did not stop in {timeout:g} s: killed")
    _wait_gone(left, 5.0)
    return lines


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of ``processes`` runs (a zombie nobody reaps counts as gone); returns
    those still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    wait = 0.01
    while True:
        left = [p for p in processes if _runs(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(wait)
        wait = min(0.25, wait * 2)


def _runs(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def last_out(shared_lock: int) -> bool:
    """Whether this replica is the last of its folder: it lets go of its shared lock on
    ``fabric.lock`` and takes it exclusively, which only the last one to try can (each tries
    after letting go of its own, so of replicas stopping together exactly one gets it)."""
    fcntl.flock(shared_lock, fcntl.LOCK_UN)
    try:
        fcntl.flock(shared_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def replica_ports(state_dir: Path) -> list[tuple[str, int]]:
    """The host port of each replica of the folder, from its lock file (blocking)."""
    found = []
    for lock in sorted(state_dir.glob("replica-*.lock")):
        with contextlib.suppress(OSError, ValueError):
            words = lock.read_text().split()
            if len(words) >= 3:
                host, _, port = words[2].rpartition(":")
                found.append((host.strip("[]"), int(port)))
    return found


def _serve(folder: Path) -> None:
    """The detached agent: take the folder's lock (exit if another agent holds it), then run as
    a joined host until SIGTERM or SIGINT (its VMs stopped gracefully)."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    for attempt in range(20):  # a replica looking (running) holds it shared for an instant
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == 19:
                print(f"local host {folder.name} already runs: not started twice", file=sys.stderr)
                os._exit(0)
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from fabric.cluster.node import run_host
    from fabric.server import until_stop_signal

    identity = Identity(folder)
    state = identity.state()
    if state is None:
        raise SystemExit(f"{folder} holds no host identity")
    known: list[tuple[str, int]] = []

    async def follow() -> None:
        # A replica started again has another host port than the leader last told (port 0):
        # its lock file in the folder says it, whoever leads.
        while True:
            known[:] = await anyio.to_thread.run_sync(replica_ports, folder.parent.parent)
            await anyio.sleep(1.0)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            tg.start_soon(partial(run_host, identity, state, extra=lambda: known))
            await until_stop_signal()
            tg.cancel_scope.cancel()

    anyio.run(main, backend="trio")


def main(argv: list[str]) -> None:
    """``python -m fabric.replica.local_hosts FOLDER``: fork the agent away and exit (so that it
    is nobody's child: no replica has to reap it, and none takes it along)."""
    folder = Path(argv[0]).absolute()
    if os.fork() != 0:
        os._exit(0)
    os.setsid()  # a session of its own (never a group leader: it was just forked)
    _serve(folder)


if __name__ == "__main__":
    main(sys.argv[1:])
