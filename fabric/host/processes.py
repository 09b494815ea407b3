"""A machine's live process tree under a root, each process placed (host agent, VM, bootstrapper,
role host...), and the signals chaos sends them: one code path for the fabric's own machine (the
controller's chaos agent) and for a joined host (its agent, asked over the link).

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
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil  # type: ignore[import-untyped]

from actors import command_line

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


#: what chaos does to processes: SIGKILL, SIGABRT (no core file), SIGSTOP, SIGCONT
Action = Literal["kill", "crash", "stop", "resume"]


def send(pid: int, signum: int) -> None:
    """Signal ``pid``; a process gone or not ours is left alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def kill_processes(procs: list[Proc], *, whole_host: bool) -> None:
    """SIGKILL each process (still the same one); ``whole_host``: their process groups first."""
    if whole_host:
        # Every process group under the host (its own, each VM's, each role host's...) at once,
        # as a power cut would; never a group the caller itself belongs to.
        ours = os.getpgid(0)
        for pgid in dict.fromkeys(p.pgid for p in procs):
            if pgid != ours:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
    for p in procs:
        if same_process(p.pid, p.started) is not None:
            send(p.pid, signal.SIGKILL)


def abort(p: Proc) -> None:
    """SIGABRT a process (still the same one), its core file size limited to 0 first."""
    proc = same_process(p.pid, p.started)
    if proc is None:
        return
    with contextlib.suppress(psutil.Error, OSError, AttributeError):
        proc.rlimit(psutil.RLIMIT_CORE, (0, 0))
    send(p.pid, signal.SIGABRT)


def signal_processes(procs: list[Proc], action: Action, *, whole_host: bool = False) -> list[Proc]:
    """Do ``action`` to each process (blocking: reads /proc); answers those it reached (for
    resume, those still the same process, resumed children first)."""
    match action:
        case "kill":
            kill_processes(procs, whole_host=whole_host)
        case "crash":
            for p in procs:
                abort(p)
        case "stop":
            for p in procs:
                send(p.pid, signal.SIGSTOP)
        case "resume":
            resumed = [p for p in reversed(procs) if same_process(p.pid, p.started) is not None]
            for p in resumed:
                send(p.pid, signal.SIGCONT)
            return resumed
    return procs
