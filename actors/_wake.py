"""Waits that ride on the event loop's other wakeups: periodic work whose exact time does not
matter (a link ping) runs when the process is awake anyway, rather than waking it by itself.

An idle process that wakes costs far more than the work it then does (cold caches, the event
loop's round): a VM process heartbeaten every 2.5 s that also woke to ping its bootstrapper
every 5 s woke twice as often as it had to. On trio an Instrument sees every return from the
I/O wait and releases the waiters whose earliest time has come; on asyncio, and whenever the
process stays asleep, a waiter ends at its latest time.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

import anyio

from ._backend import current_backend

_counter = itertools.count()


async def wake_between(earliest: float, latest: float) -> None:
    """Return at the first wakeup of this event loop ``earliest`` seconds from now or later, and
    at the latest ``latest`` seconds from now."""
    if current_backend() != "trio" or latest <= earliest:
        await anyio.sleep(latest)
        return
    event = anyio.Event()
    heapq.heappush(_waiters(), (anyio.current_time() + earliest, next(_counter), event))
    with anyio.move_on_after(latest):
        await event.wait()


#: The trio RunVar holding each run's waiters (made on first use: trio is imported only on trio).
_run_var: Any = None


def _waiters() -> list[tuple[float, int, Any]]:
    """This trio run's waiters, a heap by earliest time; the first call installs the Instrument
    that releases them."""
    global _run_var
    import trio

    if _run_var is None:
        _run_var = trio.lowlevel.RunVar("actors_wake_waiters")
    try:
        heap: list[tuple[float, int, Any]] = _run_var.get()
        return heap
    except LookupError:
        pass
    heap = []
    _run_var.set(heap)
    clock = trio.current_time

    class Rides(trio.abc.Instrument):
        def after_io_wait(self, timeout: float) -> None:
            if heap and heap[0][0] <= clock():
                now = clock()
                while heap and heap[0][0] <= now:
                    # A waiter that already ended at its latest time is set too: harmless.
                    heapq.heappop(heap)[2].set()

    trio.lowlevel.add_instrument(Rides())
    return heap
