"""When the controller last had nothing left to read: its hosts' silence is counted up to then.

A controller that is saturated (its event loop always has a task to run) reads its hosts'
links late: their heartbeats wait in the sockets and in the hosts' outboxes, unstamped, while no
single message holds the mailbox and the loop never stalls. At 10,000 hosts on a loaded machine,
placing 20,000 instances, hosts were declared dead by the thousand for the controller's own
backlog. Whenever the loop has nothing to run, every link's reader is waiting for bytes: what
the hosts had sent until then was read. On trio an Instrument notes each such moment (the
scheduler's wait for I/O with a timeout: an empty run queue), so a host is silent only for
how long it was not heard up to the last one; on asyncio, silence counts up to now, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import sniffio

#: How stale the last idle moment may be when the loop idles without a timeout (seconds).
IDLE_RESOLUTION = 0.05
#: The trio RunVar holding each run's clock (made on first use: trio is imported only on trio).
_run_var: Any = None


class IdleClock:
    """The last time (anyio.current_time()) the event loop had nothing to run."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = anyio.current_time()


def clock() -> Callable[[], float]:
    """anyio.current_time for the running event loop, without anyio's lookup of the backend at
    each call (4 us against 1 on trio: a heartbeat read the clock twice)."""
    try:
        if sniffio.current_async_library() == "trio":
            import trio

            return trio.current_time
    except sniffio.AsyncLibraryNotFoundError:
        pass
    return anyio.current_time


def listened_until() -> float:
    """Until when everything the hosts sent was read: the event loop's last idle moment on trio
    (installing its Instrument on first use in a run), now elsewhere."""
    if sniffio.current_async_library() != "trio":
        return anyio.current_time()
    return _clock().at


def _clock() -> IdleClock:
    global _run_var
    import trio

    if _run_var is None:
        _run_var = trio.lowlevel.RunVar("fabric_idle_clock")
    try:
        found: IdleClock = _run_var.get()
        return found
    except LookupError:
        pass
    clock = IdleClock()
    _run_var.set(clock)
    now, statistics = trio.current_time, trio.lowlevel.current_statistics

    class Idle(trio.abc.Instrument):
        looked = 0.0  # when a wait without a timeout was last looked into

        def before_io_wait(self, timeout: float) -> None:
            if timeout > 0:  # nothing to run: every reader waits for bytes
                clock.at = now()
                return
            # A timeout of 0 may be idle too (a deadline due, an autojump clock's turn): the
            # run queue says, looked at every IDLE_RESOLUTION at most (the statistics cost
            # 3% of a saturated controller when looked at on every round of its loop).
            t = now()
            if t - self.looked >= IDLE_RESOLUTION:
                self.looked = t
                if not statistics().tasks_runnable:
                    clock.at = t

    trio.lowlevel.add_instrument(Idle())
    return clock
