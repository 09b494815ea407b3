"""A replica's addresses: its host port reserved, kept registered, and retired with its files.

Every replica lists its API address and host port in the database (fabric.replica.registry),
re-registering every :func:`register_interval`; the leader sends the hosts the host ports
listed. With ``--listen ADDRESS:0`` a replica reserves a free pair (the host port and the join
port beside it) when it starts, holding both bound (not listening, SO_REUSEADDR) for its life,
so the port it lists is the one it will listen on when it leads.

A replica stopped gracefully takes itself off the list and removes its files from the state
folder (its lock file, and its controller certificate unless another listed replica has the
same address); the leader does the same, fenced, for a replica not seen for
:func:`retire_after` (a replica on this machine still holding its lock keeps its lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from fabric.controller.pg_store import Database, Fence, Fenced, StoreUnavailable
from fabric.replica.registry import replicas, retire_unseen
from fabric.settings import Settings

log = logging.getLogger("fabric.replica")

#: tries at finding a free host port whose join port (PORT + 1) is free too
_PAIR_TRIES = 50


def register_interval(settings: Settings) -> float:
    """How often a replica says it is still there (10 s by default)."""
    return 5 * settings.leader_renew_interval


def retire_after(settings: Settings) -> float:
    """A replica not seen this long is taken off the list (5 min by default, 1 with --fast)."""
    return 20 * settings.leader_lease_duration


def host_port(host: str, port: int) -> str:
    """``ADDRESS:PORT`` (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_of(hostport: str) -> str:
    """The address of ``ADDRESS:PORT`` (no brackets)."""
    return hostport.rpartition(":")[0].strip("[]")


def reserve_pair(host: str) -> tuple[int, list[socket.socket]]:
    """A free port on ``host`` whose next port is free too, both held bound (SO_REUSEADDR, not
    listening: the fabric's own listeners can still bind them, nobody else can).

    Raises:
        OSError: none found.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(_PAIR_TRIES):
        held: list[socket.socket] = []
        try:
            for offset in (None, 1):
                sock = socket.socket(family, socket.SOCK_STREAM)
                held.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, 0 if offset is None else held[0].getsockname()[1] + offset))
            return held[0].getsockname()[1], held
        except (OSError, OverflowError):  # the join port taken (or past 65535): another pair
            for sock in held:
                sock.close()
    raise OSError(f"no free pair of ports (host port and join port) on {host}")


def remove_files(state_dir: Path, name: str, hostport: str, others: Iterable[str], *, own: bool) -> None:
    """Remove replica ``name``'s files from the state folder: its lock file (``own``: this
    process holds it; otherwise only when nobody does), and its controller certificate and key
    unless another of ``others`` (host ports) has the same address."""
    lock = state_dir / f"replica-{name}.lock"
    if own:
        lock.unlink(missing_ok=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock.unlink(missing_ok=True)
            except BlockingIOError:
                pass  # it runs here: it registers again
            finally:
                os.close(fd)
    (state_dir / "cluster" / "replicas" / name).unlink(missing_ok=True)  # where an older fabric named it
    address = address_of(hostport) if hostport else ""
    if address and address not in {address_of(o) for o in others if o}:
        for suffix in ("pem", "key"):
            (state_dir / "cluster" / f"controller-{address}.{suffix}").unlink(missing_ok=True)


async def host_ports(db: Database) -> list[str] | None:
    """Every listed replica's host port (None: the database did not answer)."""
    try:
        return [r.host_port for r in (await replicas(db)).values() if r.host_port]
    except StoreUnavailable:
        return None


async def sweep(
    db: Database,
    state_dir: Path,
    settings: Settings,
    fence: Callable[[], Fence],
    on_fenced: Callable[[str], None],
    on_change: Callable[[str], None],
) -> None:
    """While leading: take every replica not seen for retire_after off the list, and its files."""
    while True:
        try:
            gone = await retire_unseen(db, fence(), retire_after(settings))
            left = await host_ports(db) if gone else None
        except Fenced as exc:
            on_fenced(str(exc))
            return
        except StoreUnavailable as exc:
            log.debug("cannot retire unseen replicas now: %s", exc)
            gone, left = {}, None
        for name, port in gone.items():
            others = left if left is not None else [port]  # not known: keep its certificate
            await anyio.to_thread.run_sync(partial(remove_files, state_dir, name, port, others, own=False))
            on_change(f"replica {name} retired: not seen for {retire_after(settings):g} s")
        await anyio.sleep(register_interval(settings))
