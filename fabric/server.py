"""The embedded fabric: the API (RDFE), FFE and a fabric controller with its local hosts, in one
process tree rooted here. ``fabric serve`` runs it alone; ``fabric run`` runs it and deploys."""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from actors import ActorSystem, Ref, open_system
from fabric.bytecode import warm_bytecode
from fabric.settings import Settings


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
async def open_fabric(state_dir: Path, settings: Settings, *, api_port: int = 0) -> AsyncIterator[Fabric]:
    """Run the fabric until the block ends; then stop every host, VM and role gracefully.

    The controller brings back whatever deployments its store holds (after a crash too).

    Raises:
        FabricBusy: another fabric runs for this state folder.
    """
    from fabric.controller.controller import FabricController
    from fabric.frontend import Ffe, Pool, serve_api

    state_dir, lock = lock_state_dir(state_dir)
    try:
        await anyio.to_thread.run_sync(warm_bytecode)  # every process below imports our modules
        async with open_system() as system, anyio.create_task_group() as tg:
            # Stopping the controller stops every VM, and each role may take on_stop_timeout.
            stop_budget = settings.on_stop_timeout + 3 * settings.process_stop_timeout
            controller = await system.spawn(
                lambda: FabricController(state_dir, settings, pool="local"),
                name="FabricController:local",
                stop_timeout=stop_budget,
            )
            ffe = await system.spawn(lambda: Ffe([Pool("local", controller)], state_dir), name="FFE")
            url = await tg.start(partial(serve_api, ffe, state_dir, port=api_port))
            try:
                yield Fabric(url=url, state_dir=state_dir, system=system, controller=controller, ffe=ffe)
            finally:
                tg.cancel_scope.cancel()  # the API goes first: no new request while we stop
    finally:
        os.close(lock)
