"""Starting child processes so that they die with us, and waiting for them without threads.

Linux delivers PR_SET_PDEATHSIG when the *thread* that forked a child exits, not the process.
trio forks in a worker thread that it retires after a few idle seconds, which would kill every
child about ten seconds after its birth. So every fork happens here, in one long-lived thread,
and the child asks for SIGKILL on that thread's death, which is the process's death.
Exits are awaited on a pidfd (Linux) or by polling with backoff (elsewhere).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import gc
import os
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import anyio
import anyio.to_thread

_PR_SET_PDEATHSIG = 1
_LINUX = sys.platform.startswith("linux")
_prctl = ctypes.CDLL(None, use_errno=True).prctl if _LINUX else None
_forker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="actors-forker")
#: Whether the garbage collector was on when the last fork began (it is off across a fork).
gc_was_enabled = True
#: How long a clean-up waits for a SIGKILLed child to be reaped: the kernel ends it at once unless
#: it sleeps uninterruptibly in stuck I/O, and then no wait would help.
KILL_REAP_TIMEOUT = 5.0


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only async-signal-safe work, no allocation.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ChildProcess:
    """A started child: its pid, exit code, signals, and an awaitable exit."""

    def __init__(self, popen: subprocess.Popen[bytes] | None = None, *, pid: int | None = None) -> None:
        """Wrap a Popen, or (``pid``) a child forked without exec, which we reap ourselves."""
        self.popen = popen
        if popen is not None:
            self.pid = popen.pid
            self._poll = popen.poll
        else:
            assert pid is not None
            self.pid = pid
            self._code: int | None = None
            self._poll = self._waitpid
        self._pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError:
                self._pidfd = None

    def _waitpid(self) -> int | None:
        if self._code is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self._code = 255  # reaped elsewhere: its code is lost
            else:
                if pid:
                    self._code = os.waitstatus_to_exitcode(status)
        return self._code

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self._poll()

    async def wait(self) -> int:
        """Wait until the child exits and is reaped; return its exit code. Any number of tasks
        may wait at once."""
        delay = 0.001
        while (code := self._poll()) is None:
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
        if self._poll() is None:
            os.kill(self.pid, signum)

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


async def fork_process(run: Callable[[], int]) -> ChildProcess:
    """Fork this process (no exec) and run ``run()`` in the child, which exits with its result.

    The fork happens in the same long-lived thread as start_process, for the same reason
    (PR_SET_PDEATHSIG follows the forking thread); ``run`` must set up everything else the
    child needs (see actors/_fork.py).
    """

    def fork() -> int:
        # No garbage collection until the child has frozen what it inherited: a collection
        # there could finalize the parent's coroutines and run their finally blocks in the child.
        global gc_was_enabled
        gc_was_enabled = gc.isenabled()
        gc.disable()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the executor
            os._exit(_exit_code_of(run))
        if gc_was_enabled:
            gc.enable()
        return pid

    future = _forker.submit(fork)
    pid = await anyio.to_thread.run_sync(future.result)
    return ChildProcess(pid=pid)


def _exit_code_of(run: Callable[[], int]) -> int:
    """Run a forked child's life and return its exit code, as an interpreter would end it:
    sys.exit's code, or 1 and a traceback on stderr for an uncaught exception."""
    code = 1
    try:
        code = run()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if exit_.code is not None and not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    return code


def _new_forker() -> None:
    # A forked child has no forker thread (only the thread that forked survives, and it now runs
    # the child): give it an executor of its own for the processes it will start.
    global _forker
    _forker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="actors-forker")


os.register_at_fork(after_in_child=_new_forker)
# Forking a process that runs other threads is safe here: the child only runs code that
# resets what it inherited (actors/_fork.py) before it starts its own event loop.
warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
