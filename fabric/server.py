"""The embedded fabric: the API (RDFE), FFE and a fabric controller with its local hosts, in one
process tree rooted here. ``fabric serve`` runs it alone; ``fabric run`` runs it and deploys."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from actors import ActorSystem, Ref, open_system
from fabric.bytecode import warm_bytecode
from fabric.settings import Settings

log = logging.getLogger("fabric.server")

#: the signals that stop a fabric gracefully: Ctrl-C, `kill`, and the terminal closing (SIGHUP)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class FabricBusy(Exception):
    """Another fabric already serves this state folder."""


@dataclass(frozen=True)
class Fabric:
    """A running embedded fabric."""

    url: str
    state_dir: Path
    system: ActorSystem
    controller: Ref
    ffe: Ref


@dataclass(frozen=True)
class ReplicaTerm:
    """How a controller replica runs the fabric while it leads (fabric.replica).

    The replica holds its own lock on the state folder and serves the API itself: ``mount``
    puts this term's API application behind the replica's address for the block it opens.
    """

    #: the replica's API URL
    url: str
    #: the API token (shared by the replicas of one fabric)
    token: str
    #: the lease a write must hold (Elector.fence)
    fence: Callable[[], Any]
    #: called when a write finds the lease lost (the replica stops leading at once)
    on_fenced: Callable[[str], None]
    mount: Callable[[Any], AbstractContextManager[None]]
    #: RDFE's records for the term, kept in the database and fenced (fabric.replica.records)
    records: Callable[[Path], Awaitable[Any]] | None = None
    #: every replica's host port, from the database (None: not known now), told to the hosts
    host_ports: Callable[[], Awaitable[list[str] | None]] | None = None
    #: starts a local host detached, so that it outlives the replica (fabric.replica.local_hosts)
    launch_host: Callable[[Any], Awaitable[None]] | None = None


def stop_budget(settings: Settings) -> float:
    """How long stopping role instances may take: on_stop_timeout, then each process's ladder."""
    return settings.on_stop_timeout + 3 * settings.process_stop_timeout


def lock_state_dir(state_dir: Path) -> tuple[Path, int]:
    """Take the state folder for this process (an flock held until closed); return its absolute
    path and the lock's fd. Raises FabricBusy."""
    state_dir = state_dir.absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)  # it holds the API token
    fd = os.open(state_dir / "fabric.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise FabricBusy(
            f"another fabric (pid {holder}) is running for state folder {state_dir}; "
            "stop it, or pass another --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return state_dir, fd


@asynccontextmanager
async def open_fabric(
    state_dir: Path,
    settings: Settings,
    *,
    api_port: int = 0,
    store_url: str | None = None,
    listen: tuple[str, int] | None = None,
    replica: ReplicaTerm | None = None,
    api_tls: bool = False,
) -> AsyncIterator[Fabric]:
    """Run the fabric until the block ends; then stop every host, VM and role gracefully.

    The controller brings back whatever deployments its store holds (after a crash too): SQLite
    in the state folder, or the PostgreSQL database ``store_url`` names.
    With ``listen`` (host, port) it opens the host port there and the join port at port + 1
    (fabric.cluster.port), where hosts on other machines join. With ``replica``, this is one
    term of a leading controller replica: its writes are fenced, and the API is mounted on the
    replica's own server (see ReplicaTerm). With ``api_tls`` the API serves HTTPS, its
    certificate from the cluster CA (fabric.frontend.api_tls).

    Raises:
        FabricBusy: another fabric runs for this state folder.
        StoreError: the PostgreSQL database cannot be reached, or holds a newer schema.
    """
    from fabric.chaos.portal_run import run_scenario
    from fabric.controller.controller import FabricController
    from fabric.frontend import Ffe, Pool, serve_api
    from fabric.frontend.rdfe import Rdfe
    from fabric.portal.scenarios import register

    register(run_scenario)  # the portal's chaos page runs scenarios with the chaos runner

    state_dir, lock = lock_state_dir(state_dir) if replica is None else (state_dir, -1)  # held by the replica
    fenced: dict[str, Any] = (
        {}
        if replica is None
        else {"fence": replica.fence, "on_fenced": replica.on_fenced, "host_launcher": replica.launch_host}
    )
    try:
        if replica is None:
            # Local hosts that replicas of this folder left running (the last one was killed):
            # this fabric starts its own, so they go first (no replica runs: the lock is ours).
            from fabric.replica.local_hosts import stop_all

            for line in await anyio.to_thread.run_sync(stop_all, state_dir, stop_budget(settings)):
                log.warning("%s (left by replicas of this folder)", line)
        if store_url and replica is None:  # its problems now, as one line, before anything starts
            from fabric.controller.goal_store import open_goal_store

            await (await open_goal_store(store_url, state_dir, "local")).aclose()
        await anyio.to_thread.run_sync(warm_bytecode)  # every process below imports our modules
        async with open_system() as system, anyio.create_task_group() as tg:
            # Stopping the controller stops every VM.
            controller = await system.spawn(
                lambda: FabricController(state_dir, settings, pool="local", store_url=store_url, **fenced),
                name="FabricController:local",
                stop_timeout=stop_budget(settings),
            )
            ffe = await system.spawn(
                lambda: Ffe([Pool("local", controller)], state_dir, max_instances=settings.max_instances),
                name="FFE",
            )
            if listen is not None:
                from fabric.cluster.port import serve_cluster

                others = None if replica is None else replica.host_ports
                await tg.start(
                    partial(
                        serve_cluster,
                        system,
                        state_dir,
                        settings,
                        *listen,
                        controller=controller,
                        replicas=others,
                    )
                )
            mounted: AbstractContextManager[Any] = nullcontext()
            if replica is None:
                url = await tg.start(
                    partial(
                        serve_api,
                        ffe,
                        state_dir,
                        port=api_port,
                        metrics_public=settings.metrics_public,
                        max_package_bytes=settings.max_package_bytes,
                        tls=api_tls,
                    )
                )
            else:
                url = replica.url
                app = Rdfe(
                    ffe,
                    state_dir,
                    replica.token,
                    metrics_public=settings.metrics_public,
                    max_package_bytes=settings.max_package_bytes,
                )
                if replica.records is not None:
                    app.store = await replica.records(state_dir)
                mounted = replica.mount(app)
            try:
                with mounted:
                    yield Fabric(url=url, state_dir=state_dir, system=system, controller=controller, ffe=ffe)
            finally:
                tg.cancel_scope.cancel()  # the API goes first: no new request while we stop
    finally:
        if lock >= 0:
            os.close(lock)


async def until_stop_signal() -> signal.Signals:
    """Wait for one of STOP_SIGNALS and return it.

    After SIGHUP the terminal is gone: what is printed from then on goes to /dev/null (a write
    to a hung-up terminal fails), and a further SIGHUP is ignored so that the graceful stop runs
    to its end.
    """
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        signum = await anext(signals)
    if signum == signal.SIGHUP:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        leave_terminal()
    return signum


def leave_terminal() -> None:
    """Point stdin, stdout and stderr that are terminals (character devices) at /dev/null."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            try:
                if stat.S_ISCHR(os.fstat(fd).st_mode):
                    os.dup2(devnull, fd)
            except OSError:
                continue  # closed: nothing to point elsewhere
    finally:
        os.close(devnull)
