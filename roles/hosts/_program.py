"""ProgramEntryPoint: a role's command line, run as a child of its role host process.

The program runs under ``/bin/sh -c`` in its own process group (so a stop reaches whatever
the shell started), with the role's code folder as its working directory. On Linux it also
dies with the role host: the fork happens in a worker thread that stays alive, waiting for
the program, for as long as it runs, because PR_SET_PDEATHSIG fires when the forking
*thread* ends. Async runtimes fork from short-lived worker threads, hence the own thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

import anyio
import anyio.to_thread

_PR_SET_PDEATHSIG = 1


def _die_with_parent_hook() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_parent() -> None:  # runs in the forked child, before exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return die_with_parent


class Program:
    """A command line run by the role host; ``run`` waits for it, ``terminate`` stops it."""

    def __init__(self, command: str, cwd: str) -> None:
        """Prepare to run ``command`` with ``/bin/sh -c`` in folder ``cwd``."""
        self.command = command
        self.cwd = cwd
        self.pid: int | None = None
        self.returncode: int | None = None
        self._spawned = threading.Event()
        self._exited = anyio.Event()

    def _spawn_and_wait(self) -> int:
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", self.command],
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # Only a prctl call between fork and exec: no lock is taken there.
                preexec_fn=_die_with_parent_hook(),
            )
        finally:
            self._spawned.set()
        self.pid = process.pid
        code = process.wait()
        # Whatever the shell left running in its group (a `cmd &`) ends with it.
        self._signal(signal.SIGKILL)
        return code

    async def run(self) -> int:
        """Start the program and return its exit code once it ends (negative: a signal).

        Raises OSError if it cannot be started. If the caller is cancelled, the program is
        killed; the thread that started it still reaps it.
        """
        try:
            self.returncode = await anyio.to_thread.run_sync(self._spawn_and_wait, abandon_on_cancel=True)
        finally:
            self._exited.set()
            if self.returncode is None:
                self._signal(signal.SIGKILL)
        return self.returncode

    async def terminate(self, timeout: float) -> int | None:
        """SIGTERM the program's process group, SIGKILL it after ``timeout`` s; return its code."""
        if self.pid is None or self._exited.is_set():
            return self.returncode
        self._signal(signal.SIGTERM)
        with anyio.move_on_after(timeout):
            await self._exited.wait()
        if not self._exited.is_set():
            self._signal(signal.SIGKILL)
            await self._exited.wait()
        return self.returncode

    def _signal(self, signum: signal.Signals) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)
