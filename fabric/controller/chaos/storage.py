"""Faults written on a VM's disk: a startup directive (``C/Config/Chaos.json``) and a
LocalStorage folder filled past its size.

The directive is read once, part by part, by the next role start inside the VM
(fabric.guest.chaos_directives: the bootstrapper takes ``startup_task`` before the startup
tasks, and ``on_start`` when it launches the role host)::

    {"startup_task": {"mode": "fail" | "hang"}, "on_start": {"mode": "fail" | "slow", "seconds": N}}
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec

from fabric.controller.chaos import targets
from fabric.controller.chaos.faults import (
    FILL_NAME,
    MAX_FILL_MB,
    Applied,
    World,
    kill_processes,
    reboot,
    vm_root,
)
from fabric.controller.chaos.messages import FillStorage, Hit, StartupFault
from fabric.controller.model import UP
from fabric.guest.disk import VmDisk


class StartupMode(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One part of the directive."""

    mode: str
    seconds: float | None = None


class Directive(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The content of ``C/Config/Chaos.json``."""

    startup_task: StartupMode | None = None
    on_start: StartupMode | None = None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)  # a limited-user role host must be able to read it
    os.replace(tmp, path)


async def startup(world: World, fault: StartupFault) -> Applied:
    """Write the directive, then trigger the role start that will read it."""
    if fault.startup_task is None and fault.on_start is None:
        raise targets.refuse("a startup fault needs startup_task (fail, hang) or on_start (fail, slow)")
    state, t = world.state, fault.target
    dep = targets.deployment(state, t.service, t.slot)
    inst = targets.instance(dep, t)
    directive = Directive(
        startup_task=StartupMode(mode=fault.startup_task) if fault.startup_task else None,
        on_start=StartupMode(mode=fault.on_start, seconds=fault.seconds if fault.on_start == "slow" else None)
        if fault.on_start
        else None,
    )
    path = VmDisk(vm_root(world, dep, inst), dep.id, inst.role, inst.vm).chaos_file
    await anyio.to_thread.run_sync(_write_atomically, path, msgspec.json.encode(directive))
    at = anyio.current_time()
    trigger = fault.trigger
    if trigger == "auto":
        trigger = "reboot" if fault.startup_task else "kill"
    detail = f"wrote {path}"
    if trigger == "reboot":
        detail += "; " + await reboot(world, dep, inst)
    elif trigger == "kill":
        procs = (await world.scan()).of_vm(inst.vm, "role-host")
        kill_processes(procs, whole_host=False)
        detail += "; killed " + (
            ", ".join(f"{p.name} (pid {p.pid})" for p in procs) or "no role host (none ran)"
        )

    async def undo() -> str:
        notes = []
        if await anyio.to_thread.run_sync(_remove, path):
            notes.append("directive removed unread")
        current = dep.instances.get(inst.vm)
        if current is not None and current.status not in UP and dep.goal == "Running":
            notes.append(await reboot(world, dep, current))
        return "; ".join(notes) or "directive consumed; the instance is up"

    hit = Hit(
        what="file",
        name=str(path),
        instance=inst.id,
        host=inst.host_id,
        detail=msgspec.json.encode(directive).decode(),
    )
    return Applied([hit], [inst.id], undo=undo, detail=detail, at=at)


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


async def fill(world: World, fault: FillStorage) -> Applied:
    """Write a file of sizeInMB + extra_mb into the instance's LocalStorage folder."""
    state, t = world.state, fault.target
    dep = targets.deployment(state, t.service, t.slot)
    inst = targets.instance(dep, t)
    role = dep.generations[inst.generation].role(inst.role)
    storages = {s.name: s for s in role.local_storage}
    name = fault.storage or next(iter(storages), None)
    if name is None or name not in storages:
        known = ", ".join(storages) or "none"
        raise targets.refuse(
            f"role {inst.role} has no LocalStorage {fault.storage!r}; it has: {known}",
            "ResourceNotFound",
            404,
        )
    size_mb = storages[name].size_in_mb + max(1, fault.extra_mb)
    if size_mb > MAX_FILL_MB:
        raise targets.refuse(
            f"LocalStorage {name} is {storages[name].size_in_mb} MB: chaos fills at most {MAX_FILL_MB} MB"
        )
    disk = VmDisk(vm_root(world, dep, inst), dep.id, inst.role, inst.vm)
    path = disk.local_resource(name) / FILL_NAME
    try:
        await anyio.to_thread.run_sync(_write_zeros, path, size_mb)
    except OSError as exc:
        raise targets.refuse(f"cannot fill {path}: {exc}", "ConflictError", 409) from None

    async def undo() -> str:
        removed = await anyio.to_thread.run_sync(_remove, path)
        return f"removed {path}" if removed else f"{path} was gone already (a role recycle cleans the folder)"

    hit = Hit(
        what="file",
        name=str(path),
        instance=inst.id,
        host=inst.host_id,
        detail=f"{size_mb} MB in LocalStorage {name}",
    )
    return Applied(
        [hit], [inst.id], undo=undo, detail=f"{size_mb} MB written to LocalStorage {name} of {inst.id}"
    )


def _write_zeros(path: Path, size_mb: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = bytes(1024 * 1024)
    try:
        with open(path, "wb") as out:
            for _ in range(size_mb):
                out.write(chunk)
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
