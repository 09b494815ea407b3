"""Starting a process actor by fork alone: the child is a copy of its parent, not a new interpreter.

A new interpreter costs its start and every import again (about 0.2 s of CPU each here, most of
it importing trio); a fork costs a few milliseconds and shares the parent's memory until
written. The child must then shed what it inherited that is not its own, which is what this
module does before it runs the same entry point an exec'd child runs (actors._child):

- file descriptors: all closed but stdio, the link and the ones passed on purpose;
- stdio: stdin from /dev/null, stdout and stderr to the log file, as fresh Python objects;
- signal handlers and the event loop's wakeup fd: back to the defaults;
- logging: every handler of the parent removed;
- environment, working directory, import path and command line: the ones an exec'd child with
  the same options would have (the command line shows in ps and tells chaos who it is);
- exit handlers: the parent's are dropped; the child's own run when it ends, as they would in
  an interpreter (it then ends with os._exit, past anything else of the parent's);
- the garbage collector: it is off across the fork and the inherited objects are frozen first
  thing, so no collection finalizes the parent's objects here (a coroutine of the parent's
  closed in the child would run its finally blocks here), nor touches and copies their pages.

A child that changes user (``run_as``) or runs another interpreter is exec'd instead: a limited
role must not start with a copy of a privileged parent's memory.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import _spawn

#: What the child inherited and must keep referenced: dropping them would run their finalizers
#: (a parent's half-filled stdout buffer, flushed into the child's log).
_inherited: list[object] = []


@dataclass(frozen=True)
class ForkedStart:
    """Everything a forked child needs to become the process an exec would have started."""

    argv: Sequence[str]  # as for exec: [python, "-m", "actors._child", ...]
    env: Mapping[str, str]
    cwd: str | None
    new_session: bool
    log_fd: int | None  # stdout and stderr; None keeps the parent's
    keep_fds: Sequence[int]  # the link and the pass_fds


def command_line(cmdline: Sequence[str]) -> list[str]:
    """A process's command line as psutil reads it, made whole for a forked process actor.

    A forked child's title is one space-separated string padded with NULs (setproctitle), which
    psutil returns as one argument followed by empty ones: split it back into its arguments.
    """
    args = [arg for arg in cmdline if arg]
    if len(args) == 1 and " " in args[0]:
        return args[0].split(" ")
    return args


def can_fork(run_as: object, python: str | None, title: str) -> bool:
    """Whether a child with these options, showing ``title`` as its command line, may be forked
    rather than exec'd."""
    return (
        hasattr(os, "fork")
        and sys.platform.startswith("linux")
        and run_as is None
        and python is None
        and os.environ.get("ACTORS_SPAWN", "fork") != "exec"
        and len(title.encode()) < _title_room()
    )


_room: int | None = None


def _title_room() -> int:
    """How long a command line a forked child can show: it rewrites the memory that held the
    first process's arguments and environment (setproctitle), whose size every fork inherits.
    A title that does not fit would be cut, and chaos tools would not know the process."""
    global _room
    if _room is None:
        try:
            with open("/proc/self/stat", "rb") as stat:
                data = stat.read()
            # The fields after the command name (which may hold spaces); field 3 comes first.
            fields = data[data.rindex(b")") + 2 :].split()
            arg_start, env_end = int(fields[48 - 3]), int(fields[51 - 3])
            _room = env_end - arg_start - 1
        except (OSError, ValueError, IndexError):
            _room = 0  # unknown: exec, which always shows the whole command line
    return _room


def become(start: ForkedStart) -> int:
    """In the child right after fork: shed the parent's state, then serve the actor."""
    # Forked with the collector off (see fork_process): freeze what we inherited, then turn it
    # back on for the child's own objects.
    gc.freeze()
    if _spawn.gc_was_enabled:
        gc.enable()
    # First: it moves the environment out of the way of the longer title, which must happen
    # before the environment is replaced.
    import setproctitle

    setproctitle.setproctitle(" ".join(start.argv))
    if start.new_session:
        os.setsid()
    _stdio(start.log_fd)
    _close_all_but({0, 1, 2, *start.keep_fds})
    _signals()
    if start.cwd is not None:
        os.chdir(start.cwd)
    os.environ.clear()
    os.environ.update(start.env)
    _import_path(start.env.get("PYTHONPATH", ""))
    sys.argv[:] = ["-m", *start.argv[3:]]  # what `python -m actors._child ...` sees
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            _inherited.extend(logger.handlers)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
    atexit._clear()  # the parent's exit handlers are not the child's
    from . import _child

    try:
        return _child.run(list(start.argv[3:]))
    finally:
        atexit._run_exitfuncs()  # the child's own, as an interpreter runs them when it ends


def _stdio(log_fd: int | None) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if log_fd is not None:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
    _inherited.extend([sys.stdin, sys.stdout, sys.stderr])
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)


def _close_all_but(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):  # (the listing's own fd is gone already)
                os.close(fd)


def _signals() -> None:
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    # As a new interpreter starts: Ctrl-C raises KeyboardInterrupt, a closed pipe raises.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _import_path(pythonpath: str) -> None:
    # `python -m` puts the working directory first, then PYTHONPATH, then the interpreter's own.
    first = [os.getcwd(), *(p for p in pythonpath.split(os.pathsep) if p)]
    sys.path[:] = first + [p for p in sys.path if p not in first]
