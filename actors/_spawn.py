"""Starting child processes so that they die with us, and waiting for them without threads.

Linux delivers PR_SET_PDEATHSIG when the *thread* that forked a child exits, not the process.
trio forks in a worker thread that it retires after a few idle seconds, which would kill every
child about ten seconds after its birth. So every fork happens here, in one long-lived thread,
and the child asks for SIGKILL on that thread's death, which is the process's death.
Exits are awaited on a pidfd (Linux) or by polling with backoff (elsewhere).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

import anyio
import anyio.to_thread

_PR_SET_PDEATHSIG = 1
_LINUX = sys.platform.startswith("linux")
_prctl = ctypes.CDLL(None, use_errno=True).prctl if _LINUX else None
_forker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="actors-forker")


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only async-signal-safe work, no allocation.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ChildProcess:
    """A started child: its pid, exit code, signals, and an awaitable exit."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(popen.pid)
            except OSError:
                self._pidfd = None

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self.popen.poll()

    async def wait(self) -> int:
        """Wait until the child exits and is reaped; return its exit code. Any number of tasks
        may wait at once."""
        delay = 0.001
        while (code := self.popen.poll()) is None:
            if self._pidfd is not None:
                waiter = os.dup(self._pidfd)  # one fd per waiter: trio allows one waiter per fd
                try:
                    await anyio.wait_readable(waiter)
                finally:
                    os.close(waiter)
            else:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.05)
        self._close_pidfd()
        return code

    def send_signal(self, signum: int) -> None:
        """Send a signal unless the child is already reaped."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __del__(self) -> None:
        self._close_pidfd()


async def start_process(
    command: Sequence[str],
    *,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    start_new_session: bool = False,
    pass_fds: Sequence[int] = (),
    die_with_parent: bool = True,
) -> ChildProcess:
    """Start ``command`` as a child process that is SIGKILLed if this process dies.

    Arguments are subprocess.Popen's. Raises OSError (e.g. FileNotFoundError) when the
    command cannot be started.
    """

    def fork() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(command),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=start_new_session,
            pass_fds=tuple(pass_fds),
            close_fds=True,
            preexec_fn=_die_with_parent if die_with_parent and _LINUX else None,
        )

    future = _forker.submit(fork)
    popen = await anyio.to_thread.run_sync(future.result)
    return ChildProcess(popen)
