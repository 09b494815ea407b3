"""The fabric's live process tree, each process placed: host agent, VM, bootstrapper, role host...

Process actors carry their actor name on the command line
(``python -m actors._child FD PPID BACKEND NAME [USER]``): ``host:<id>`` is a host agent,
``vm:<vm>`` a VM's first process (AppAgent and GuestAgent), ``WaHostBootstrapper``, the role
hosts ``WaWorkerHost``/``WaIISHost``/``WaWebHost`` and web workers ``W3WP``. Anything else under
a VM (startup tasks, plugin agents, their shells, the ``RoleHostTemplate`` role hosts are forked
from) is a ``task``. Scanning reads /proc: call it
from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from actors import command_line
from fabric.controller.chaos.messages import ProcessView

ROLE_HOSTS = frozenset({"WaWorkerHost", "WaIISHost", "WaWebHost"})
_CHILD_MODULE = "actors._child"
_TEMPLATE_MODULE = "actors._template"


def actor_name(cmdline: Iterable[str]) -> str | None:
    """The actor name a process actor's command line carries, or None for any other process."""
    args = list(cmdline)
    if _TEMPLATE_MODULE in args:  # a role host template: ``-m actors._template FD PPID NAME ...``
        i = args.index(_TEMPLATE_MODULE)
        return args[i + 3] if len(args) > i + 3 else None
    try:
        i = args.index(_CHILD_MODULE)
    except ValueError:
        return None
    return args[i + 4] if len(args) > i + 4 else None


@dataclass(frozen=True)
class Proc:
    """One process: who it is and where it sits."""

    pid: int
    ppid: int
    pgid: int
    name: str
    started: float
    place: str = ""
    instance: str = ""  # the VM name, for processes of a VM
    host: str = ""  # the host id, for processes of a host

    def view(self, instance_ids: dict[str, str] | None = None) -> ProcessView:
        """As the API shows it (``instance_ids`` maps VM names to instance ids)."""
        instance = (instance_ids or {}).get(self.instance, self.instance)
        return ProcessView(
            pid=self.pid,
            ppid=self.ppid,
            pgid=self.pgid,
            name=self.name,
            started=self.started,
            place=self.place,
            instance=instance,
            host=self.host,
        )


@dataclass
class ProcessMap:
    """The processes under one root, placed."""

    root: int
    procs: list[Proc] = field(default_factory=list)

    def host_agent(self, host_id: str) -> Proc | None:
        """The host agent process of a host."""
        return next((p for p in self.procs if p.place == "host-agent" and p.host == host_id), None)

    def of_host(self, host_id: str) -> list[Proc]:
        """Every process of a host (its agent first, then its VMs' processes, parents first)."""
        return [p for p in self.procs if p.host == host_id]

    def of_vm(self, vm: str, place: str) -> list[Proc]:
        """The processes at ``place`` in a VM (``guest-agent``/``app-agent``: its first process)."""
        if place in ("guest-agent", "app-agent"):
            place = "vm"
        return [p for p in self.procs if p.instance == vm and p.place == place]

    def keys(self) -> set[tuple[int, float]]:
        """(pid, start time) of every process: a process's identity across pid reuse."""
        return {(p.pid, p.started) for p in self.procs}


def _place(name: str | None) -> str:
    if name is None:
        return "task"
    if name.startswith("host:"):
        return "host-agent"
    if name.startswith("vm:"):
        return "vm"
    if name == "WaHostBootstrapper":
        return "bootstrapper"
    if name in ROLE_HOSTS:
        return "role-host"
    if name == "W3WP":
        return "web-worker"
    return "task"


def scan(root: int) -> ProcessMap:
    """Every live descendant of ``root``, parents before children, each placed (blocking)."""
    try:
        top = psutil.Process(root)
        children = top.children(recursive=True)
    except psutil.Error:
        return ProcessMap(root)
    raw: dict[int, tuple[int, int, str | None, str, float]] = {}
    for proc in children:
        try:
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmdline = command_line(proc.cmdline())
                raw[proc.pid] = (
                    proc.ppid(),
                    os.getpgid(proc.pid),
                    actor_name(cmdline),
                    Path(cmdline[0]).name if cmdline else proc.name(),
                    proc.create_time(),
                )
        except (psutil.Error, ProcessLookupError):
            continue  # gone while we looked
    placed: dict[int, Proc] = {}

    def place(pid: int) -> Proc | None:
        if pid in placed:
            return placed[pid]
        if pid not in raw:
            return None
        ppid, pgid, name, exe, started = raw[pid]
        parent = place(ppid)
        kind = _place(name)
        host = parent.host if parent is not None else ""
        instance = parent.instance if parent is not None else ""
        if kind == "host-agent" and name is not None:
            host = name.removeprefix("host:")
        elif kind == "vm" and name is not None:
            instance = name.removeprefix("vm:")
        proc = Proc(pid, ppid, pgid, name or exe, started, kind, instance, host)
        placed[pid] = proc
        return proc

    for pid in raw:
        place(pid)
    ordered = _parents_first(placed, root)
    return ProcessMap(root, ordered)


def _parents_first(placed: dict[int, Proc], root: int) -> list[Proc]:
    children: dict[int, list[Proc]] = {}
    for proc in placed.values():
        children.setdefault(proc.ppid, []).append(proc)
    out: list[Proc] = []
    stack = sorted(children.get(root, []), key=lambda p: p.pid, reverse=True)
    while stack:
        proc = stack.pop()
        out.append(proc)
        stack.extend(sorted(children.get(proc.pid, []), key=lambda p: p.pid, reverse=True))
    return out


def same_process(pid: int, started: float) -> psutil.Process | None:
    """The live process ``pid`` if it is still the one that started at ``started``, else None."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def still_alive(seen: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
    """The (pid, start time) pairs whose process still runs (blocking)."""
    return [key for key in seen if same_process(*key) is not None]


def fabric_pid(state_dir: str | os.PathLike[str]) -> int | None:
    """The pid of the fabric serving a state folder (written in its ``fabric.lock``), or None."""
    with contextlib.suppress(OSError, ValueError):
        text = (Path(state_dir) / "fabric.lock").read_text().strip()
        pid = int(text)
        return pid if psutil.pid_exists(pid) else None
    return None
