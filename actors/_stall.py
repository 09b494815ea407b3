"""The stall detector: every event-loop stall over a threshold is logged with what caused it.

A stall is a stretch of time in which one task ran without yielding, so no other task of the
process ran: no message was handled, no heartbeat answered, no timer fired. One blocking call in
one handler (a socket probe loop, a file walk, a subprocess wait, a database call) stalls every
actor of the process at once. The detector names the culprit as ``actor <name> handling
<MessageType>`` when an actor's handler ran it, else by the task's name.

- trio: an Instrument times every task step, from its ``before_task_step`` to the next step's
  or to the scheduler's ``before_io_wait`` (one hook call per step): exact. It costs about
  1-1.5 us per task step on the 2-core development machine.
- asyncio: a ticker task measures how late it wakes (a step timer would cost every step); the
  culprit named is the actor whose message began last before the loop came back, if any.

``open_system`` installs it once per event loop (``REDDOG_STALL_DETECTOR=off`` leaves it out,
to measure what it costs). Setting ``REDDOG_STALL_LOG`` to a file path makes every process that
inherits the variable also append each stall to that file as one JSON line (tests read it to fail
on stalls of the controller or a host agent).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._backend import current_backend

if TYPE_CHECKING:
    from ._cell import LocalCell

logger = logging.getLogger("actors.stall")

#: Steps that hold the loop longer than this are stalls (seconds).
STALL_THRESHOLD = 0.1
#: The environment variable naming a file each stall is appended to (JSON lines).
STALL_LOG_ENV = "REDDOG_STALL_LOG"
#: How often the asyncio ticker looks at the clock.
_TICK = 0.05

#: What this process serves (a child process names the actor it runs; "main" otherwise).
process_label = "main"


class _Step:
    """When the running task step began (perf_counter; trio only, 0.0 elsewhere)."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = 0.0


#: Shared with the actor cells: a message taken and finished within one step is timed by it.
step = _Step()
#: The task serving each in-process actor, to name the actor and message behind a stall.
_serving: dict[Any, LocalCell] = {}
#: Those that stopped serving since the last step began (or the last asyncio tick).
_stopped: dict[Any, LocalCell] = {}
_installed: anyio.lowlevel.RunVar[bool] = anyio.lowlevel.RunVar("stall_detector", default=False)


@dataclass(frozen=True)
class Stall:
    """One stall: how long the loop was held, and by what."""

    seconds: float
    culprit: str
    actor: str | None
    message: str | None
    process: str
    pid: int


def child_started(label: str) -> None:
    """This process is a child serving actor ``label`` (a forked one forgets its parent's tasks)."""
    global process_label
    process_label = label
    _serving.clear()
    _stopped.clear()


def serving(task: Any, cell: LocalCell | None) -> None:
    """Register (or, with None, forget) the task that serves ``cell``'s mailbox."""
    if cell is None:
        gone = _serving.pop(task, None)
        if gone is not None:
            # The step under way may have stalled in the actor's handler before it stopped
            # (a stop read off the link in the same step): it is still named after the actor.
            _stopped[task] = gone
    else:
        _serving[task] = cell


def _describe(task: Any, seconds: float, since: float) -> Stall:
    """Who held the loop from ``since`` (perf_counter) for ``seconds``: the message an actor's
    serving task was handling, or the task."""
    cell = _serving.get(task) or _stopped.get(task)
    if cell is not None:
        # A step may handle several messages (those already queued): the one that took long,
        # else the last one taken.
        culprit_message = cell.slow if cell.slow is not None and cell.slow_at >= since else cell.handling
        cell.slow = None
        message = culprit_message.__name__ if culprit_message is not None else None
        culprit = f"actor {cell.name} " + (f"handling {message}" if message else "before its first message")
        return Stall(seconds, culprit, cell.name, message, process_label, os.getpid())
    name = getattr(task, "name", None) or (task.get_name() if hasattr(task, "get_name") else repr(task))
    return Stall(seconds, f"task {name}", None, None, process_label, os.getpid())


def report(stall: Stall) -> None:
    """Log a stall and append it to the file ``REDDOG_STALL_LOG`` names (if any)."""
    logger.warning(
        "event loop stalled %.0f ms in %s (process %s); nothing else ran meanwhile",
        stall.seconds * 1000,
        stall.culprit,
        stall.process,
    )
    path = os.environ.get(STALL_LOG_ENV)
    if not path:
        return
    line = (json.dumps(asdict(stall)) + "\n").encode()
    try:
        # One small O_APPEND write: whole lines even with many processes writing.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError:
        pass  # a process that may not write there (a limited role) still logs the stall


def install(threshold: float = STALL_THRESHOLD, on_stall: Callable[[Stall], None] = report) -> None:
    """Watch the running event loop for stalls over ``threshold`` seconds (once per loop)."""
    if _installed.get() or os.environ.get("REDDOG_STALL_DETECTOR") == "off":
        return
    _installed.set(True)
    if current_backend() == "trio":
        import trio

        trio.lowlevel.add_instrument(_trio_instrument(threshold, on_stall))
    else:
        import asyncio

        loop = asyncio.get_running_loop()
        task = loop.create_task(_tick(threshold, on_stall), name="actors stall detector")
        _tickers.add(task)
        task.add_done_callback(_tickers.discard)


def _trio_instrument(threshold: float, on_stall: Callable[[Stall], None]) -> Any:
    """A trio Instrument timing each task step (built here: trio is imported only on trio).

    One hook per step: a step ends where the next begins or the loop waits for I/O, so the time
    from one ``before_task_step`` to the next (or to ``before_io_wait``) is the step's length.
    """
    import trio

    clock = time.perf_counter
    now = step

    class TrioStalls(trio.abc.Instrument):
        def __init__(self) -> None:
            self.task: Any = None  # the task of the step running now (None: the scheduler's)

        def _ended(self, at: float) -> None:
            held = at - now.started
            if held > threshold and self.task is not None:
                on_stall(_describe(self.task, held, now.started))

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            at = clock()
            if at - now.started > threshold:
                self._ended(at)
            if _stopped:
                _stopped.clear()
            now.started = at
            self.task = task

        def before_io_wait(self, timeout: float) -> None:
            self._ended(clock())
            self.task = None

        def after_io_wait(self, timeout: float) -> None:
            now.started = clock()

    instrument = TrioStalls()
    instrument.task = trio.lowlevel.current_task()  # installed mid-step: it counts from now
    step.started = clock()
    return instrument


#: Keeps the asyncio ticker tasks referenced while they run.
_tickers: set[Any] = set()


async def _tick(threshold: float, on_stall: Callable[[Stall], None]) -> None:
    import asyncio

    while True:
        due = time.perf_counter() + _TICK
        await asyncio.sleep(_TICK)
        late = time.perf_counter() - due
        if late > threshold:
            # The actor that took a message last before the loop came back held it, if any did.
            began = due - _TICK
            serving = [*_serving.items(), *_stopped.items()]
            recent = [(cell.handling_at, task) for task, cell in serving if cell.handling_at >= began]
            if recent:
                on_stall(_describe(max(recent, key=lambda r: r[0])[1], late, began))
            else:
                on_stall(Stall(late, "a task step", None, None, process_label, os.getpid()))
        _stopped.clear()
