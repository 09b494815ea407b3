"""Faults on the control plane itself: kill or hang a controller replica, stop the database.

Applied by the caller's process (a controller cannot undo its own SIGSTOP): a replica is found
by its lock file in the shared state folder (``replica-NAME.lock`` holds its pid while it runs),
and who leads by asking any replica ``GET /replicas``. ``leader`` and ``follower`` name a
replica by role at the moment of the fault.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import msgspec

from fabric.client.tls import folder_verify
from fabric.frontend.auth import read_token
from fabric.replica.front import REPLICAS_PATH, ReplicasView


class ReplicaFaultError(ValueError):
    """A replica fault that cannot be applied (one line: what to change)."""


def running_replicas(state_dir: Path) -> dict[str, tuple[int, str]]:
    """The replicas running for a state folder: name -> (pid, API URL) (a lock file whose lock
    is held)."""
    found: dict[str, tuple[int, str]] = {}
    for lock in sorted(Path(state_dir).glob("replica-*.lock")):
        name = lock.name.removeprefix("replica-").removesuffix(".lock")
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: the replica runs (or is stopped)
                lines = os.read(fd, 4096).decode(errors="replace").split()
                if len(lines) >= 2 and lines[0].isdigit():  # then its host port (fabric.replica)
                    found[name] = (int(lines[0]), lines[1])
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)  # nobody holds it: a replica that stopped
        finally:
            os.close(fd)
    return found


async def replica_view(state_dir: Path, urls: list[str]) -> ReplicasView:
    """Every replica and who leads, as the first of ``urls`` that answers sees it.

    Raises:
        ReplicaFaultError: none answered.
    """
    headers = {"authorization": f"Bearer {read_token(state_dir) or ''}"}
    problems = []
    verify = folder_verify(state_dir)  # a replica's https: the cluster CA
    async with httpx.AsyncClient(timeout=5.0, headers=headers, verify=verify) as client:
        for url in urls:
            try:
                response = await client.get(url + REPLICAS_PATH)
            except httpx.HTTPError as exc:
                problems.append(f"{url}: {type(exc).__name__}")
                continue
            if response.status_code == 200:
                return msgspec.json.decode(response.content, type=ReplicasView)
            problems.append(f"{url}: {response.status_code}")
    raise ReplicaFaultError(f"no replica told who leads ({'; '.join(problems)})")


async def pick_replica(state_dir: Path, which: str) -> tuple[str, int, str]:
    """(name, pid, role) of the replica ``which`` names: ``leader``, ``follower`` or a name.

    Raises:
        ReplicaFaultError: no such replica running, or no leader now.
    """
    running = running_replicas(state_dir)
    if not running:
        raise ReplicaFaultError(f"no controller replica runs for state folder {state_dir}")
    pids = {name: pid for name, (pid, _) in running.items()}
    view = await replica_view(state_dir, [url for _, url in running.values()])
    leader = view.leader
    if which == "leader":
        if leader is None or leader not in pids:
            raise ReplicaFaultError("no replica leads now (an election is under way); try again")
        return leader, pids[leader], "the leader"
    if which == "follower":
        followers = sorted(n for n in pids if n != leader)
        if not followers:
            raise ReplicaFaultError("no follower runs (only the leader)")
        return followers[0], pids[followers[0]], "a follower"
    if which not in pids:
        raise ReplicaFaultError(f"replica {which!r} does not run here (running: {', '.join(sorted(pids))})")
    return which, pids[which], "the leader" if which == leader else "a follower"


async def kill_replica(state_dir: Path, which: str) -> str:
    """SIGKILL a replica; returns what was done (one line)."""
    name, pid, role = await pick_replica(state_dir, which)
    os.kill(pid, signal.SIGKILL)
    return f"replica {name} ({role}, pid {pid}) killed"


async def hang_replica(state_dir: Path, which: str, seconds: float) -> str:
    """SIGSTOP a replica for ``seconds`` (SIGCONT even when cancelled); returns what was done."""
    name, pid, role = await pick_replica(state_dir, which)
    os.kill(pid, signal.SIGSTOP)
    try:
        await anyio.sleep(seconds)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return f"replica {name} ({role}, pid {pid}) stopped for {seconds:g} s, then continued"


async def _command(argv: str) -> None:
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(shlex.split(argv), capture_output=True, text=True, timeout=120, check=False)
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise ReplicaFaultError(f"{argv!r} exited {done.returncode}: {lines[-1] if lines else ''}")


async def database_outage(stop: str, start: str, seconds: float) -> str:
    """Run ``stop``, wait ``seconds``, run ``start`` (always, once stop ran); returns what was done.

    Raises:
        ReplicaFaultError: a command failed (its last line).
    """
    await _command(stop)
    began = anyio.current_time()
    try:
        await anyio.sleep(seconds)
    finally:
        with anyio.CancelScope(shield=True):
            await _command(start)
    return f"database stopped ({stop!r}) and started again ({start!r}) after {anyio.current_time() - began:.1f} s"
