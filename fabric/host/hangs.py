"""Chaos hangs a joined host ends by itself, so that none outlives its controller: a VM's processes
stopped with a duration are resumed by a timer of the host agent at its end (and when the agent
stops), even when no controller can reach the host any more; the host's own processes (its agent
and everything under it) are resumed by a backstop process of a session of its own, since the
agent is stopped with them. Every resume touches a pid only while it is the same process.

The VM processes held are written down in the host's folder (``chaos-hangs.json``): an agent
killed while it held them (SIGKILL: no timer, no resume at its stop) resumes them when it starts
again (``sweep``).

Run as ``python -m fabric.host.hangs SECONDS PID:STARTED...``, it is that backstop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from fabric.host.ledger import host_ledger, write_ledger
from fabric.host.processes import Proc, kill_processes, scan, signal_processes

#: seconds between the answer to a SignalHost and its damage (the answer goes first)
ANSWER_FIRST = 0.5
#: the file, in the host's own folder, of the VM processes held stopped
LEDGER = "chaos-hangs.json"
Spawner = Callable[..., object]


@dataclass(eq=False)
class _Held:
    procs: list[Proc]
    #: its deadline is the hang's end
    end: anyio.CancelScope
    #: cancelled when the processes are resumed on request
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class Hangs:
    """The VM processes this host holds stopped, each hang with its own end.

    Args:
        start_soon: runs the timers (the agent's Actor.start_soon).
        log: writes one line to the host's log.
    """

    def __init__(
        self, start_soon: Spawner, log: Callable[[str], None] = lambda line: None, ledger: Path | None = None
    ) -> None:
        self.start_soon = start_soon
        self.log = log
        self.held: dict[frozenset[tuple[int, float]], _Held] = {}
        #: where the processes held are written down (None: nowhere)
        self.ledger = ledger
        self._writing = anyio.Lock()

    def hold(self, procs: list[Proc], seconds: float) -> None:
        """Resume ``procs`` (stopped) ``seconds`` from now unless released first; holding the
        same processes again moves their end."""
        key = frozenset((p.pid, p.started) for p in procs)
        if not key or seconds <= 0:
            return
        deadline = anyio.current_time() + seconds
        found = self.held.get(key)
        if found is not None:
            found.end.deadline = deadline
            return
        self.held[key] = held = _Held(procs, anyio.CancelScope(deadline=deadline))
        self.start_soon(self._timer, key, held)
        self.start_soon(self._write)

    def renew(self, keys: list[tuple[int, float]], seconds: float) -> bool:
        """Move the end of the hang of exactly these processes; False when none is held."""
        held = self.held.get(frozenset(keys))
        if held is None:
            return False
        held.end.deadline = anyio.current_time() + seconds
        return True

    def release(self, keys: list[tuple[int, float]]) -> None:
        """These processes are resumed on request: no timer for them any more."""
        wanted = set(keys)
        for key in [k for k in self.held if k & wanted]:
            self.held.pop(key).scope.cancel()
        self.start_soon(self._write)

    def resume_all(self) -> None:
        """Resume every held process now (the agent stops; blocking, brief)."""
        for held in self.held.values():
            held.scope.cancel()
            signal_processes(held.procs, "resume")
        self.held.clear()
        if self.ledger is not None:
            with contextlib.suppress(OSError):
                self.ledger.unlink(missing_ok=True)

    async def _timer(self, key: frozenset[tuple[int, float]], held: _Held) -> None:
        with held.scope:
            with held.end:
                await anyio.sleep_forever()
            if self.held.get(key) is held:
                del self.held[key]
            await self._write()
            resumed = await anyio.to_thread.run_sync(signal_processes, held.procs, "resume")
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in resumed) or "nothing (gone)"
            self.log(f"chaos: a hang ended by this host at its end: SIGCONT {names}")

    async def _write(self) -> None:
        """Write down the processes held now (the file removed when none is)."""
        if self.ledger is None:
            return
        async with self._writing:
            held = [[p.pid, p.started] for h in self.held.values() for p in h.procs]
            try:
                await anyio.to_thread.run_sync(write_ledger, self.ledger, held)
            except OSError as exc:
                self.log(f"chaos: the processes held not written down in {self.ledger}: {exc}")


def ledger_path(state_dir: str | Path, host_id: str) -> Path:
    """The ledger of the VM processes host ``host_id`` holds stopped (its own folder)."""
    return host_ledger(state_dir, host_id, LEDGER)


def sweep(path: Path) -> list[str]:
    """Resume the processes an agent that did not stop cleanly held (each only while the same
    process; blocking, brief); answers what was done, in a line."""
    try:
        held = json.loads(path.read_text())
        procs = [Proc(int(pid), 0, 0, "", float(started)) for pid, started in held]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError) as exc:
        path.unlink(missing_ok=True)
        return [f"chaos: the processes held: {path} unreadable ({exc}); removed"]
    resumed = signal_processes(procs, "resume")
    path.unlink(missing_ok=True)
    pids = ", ".join(str(p.pid) for p in resumed) or "none (gone)"
    return [f"chaos: processes held stopped by an agent that did not stop, resumed: {pids}"]


def own_processes(whole: bool) -> list[Proc]:
    """This process (the agent), then (``whole``) every process under it, parents first (blocking)."""
    import psutil  # type: ignore[import-untyped]

    me = psutil.Process()
    agent = Proc(os.getpid(), os.getppid(), os.getpgid(0), "fabric host join", me.create_time(), "host-agent")
    return [agent, *(scan(os.getpid()).procs if whole else [])]


async def signal_self(
    procs: list[Proc], action: str, seconds: float, backstop: list[str] | None = None, hang: str = ""
) -> None:
    """Do ``action`` to this host's own processes (this one first in ``procs``), a moment after
    the answer left: kill or crash them, or stop them for ``seconds`` with a backstop of its
    own session that resumes them then (``backstop``: its command, which is also given the
    hang's id, and resumes them as soon as the hang is undone: fabric.cluster.hang_end)."""
    await anyio.sleep(ANSWER_FIRST)
    me, others = procs[0], procs[1:]
    if action == "stop":
        argv = (
            [*backstop, f"{seconds:.3f}", hang]
            if backstop
            else [sys.executable, "-m", "fabric.host.hangs", f"{seconds:.3f}"]
        )
        argv += [f"{p.pid}:{p.started!r}" for p in procs]
        # Not waited for: it outlives this process's stop and resumes it (then it is reaped by
        # the next subprocess this process starts, or by init).
        subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)  # noqa: ASYNC220
        signal_processes(others, "stop")
        os.kill(me.pid, signal.SIGSTOP)
    elif action == "crash":
        signal_processes([me], "crash")
    else:
        kill_processes(others, whole_host=True)
        os.kill(me.pid, signal.SIGKILL)


def _backstop(argv: list[str]) -> None:
    """Sleep, then resume the processes named (children first, each only if the same one)."""
    seconds = float(argv[0])
    procs = []
    for item in argv[1:]:
        pid, _, started = item.partition(":")
        procs.append(Proc(int(pid), 0, 0, "", float(started)))
    time.sleep(max(0.0, seconds))
    signal_processes(procs, "resume")


if __name__ == "__main__":
    _backstop(sys.argv[1:])
