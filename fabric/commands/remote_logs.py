"""`fabric logs` for an instance on a joined host: its VM folder is on that machine, so the logs
are listed and read through the API (the controller asks the host over its link)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fabric.client import ClientError, FabricClient, NoFabricRunning
from fabric.client.deployments import find_instance
from fabric.client.errors import ApiRefused
from fabric.controller.messages import Slot

#: bytes one read asks for
_CHUNK = 256 * 1024


def on_joined_host(
    state_dir: Path, instance: str, service: str | None, slot: str | None
) -> tuple[str, Slot] | None:
    """(service, slot) of the instance when it runs on a joined host; None when it does not (or
    no fabric runs, or the fabric does not know it)."""
    try:
        with FabricClient(state_dir, timeout=10.0) as client:
            view = client.run(find_instance, instance, service, slot)
            client.instance_log(view.service, view.slot, instance, limit=0)
    except (NoFabricRunning, ApiRefused, ClientError):
        return None
    return view.service, view.slot


def list_remote(state_dir: Path, instance: str, where: tuple[str, Slot]) -> list[tuple[str, str, int]]:
    """(short name, where, size) of every log of the instance's VM on its joined host: each
    file's own path there (an older host names none: the VM folder)."""
    with FabricClient(state_dir, timeout=30.0) as client:
        log = client.instance_log(where[0], where[1], instance)
    folder = f"{log.host}:vms/{log.vm}"
    return [
        (name, f"{folder}/{log.paths[name]}" if name in log.paths else folder, size)
        for name, size in sorted(log.logs.items())
    ]


def follow_remote(
    state_dir: Path,
    instance: str,
    where: tuple[str, Slot],
    which: str,
    *,
    follow: bool,
    echo: Callable[[str], None],
    interval: float = 0.5,
) -> None:
    """Print a log of the instance's VM on its joined host; with ``follow``, keep printing what
    is appended until Ctrl-C (a log that shrank is read again from its start).

    Raises:
        ClientError: the host has no such log, or cannot be reached.
    """
    offset = 0
    with FabricClient(state_dir, timeout=30.0) as client:
        while True:
            log = client.instance_log(where[0], where[1], instance, which, offset, _CHUNK)
            if log.size < offset:
                offset = 0  # it started again (a reimaged VM)
                continue
            if log.data:
                echo(log.data.decode(errors="replace"))
                offset += len(log.data)
                continue
            if not follow:
                return
            time.sleep(interval)
