"""Keep trio's mock clock honest while role code runs in a thread.

A plain-``def`` role method or event handler runs in a worker thread, which trio's autojump
clock cannot see: with every task waiting for the thread, it would jump straight to the next
deadline (say, on_stop's time limit) and cut code that is merely running. While any such
thread is awaited, the clock is switched to real time (rate 1, no autojump); it goes back to
virtual time when the last one returns.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any


class _RealTimeWhileInThreads:
    """A guard for roles._threads: real time while at least one role thread is awaited."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.depth = 0
        self.saved: tuple[float, float] = (clock.rate, clock.autojump_threshold)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.depth == 0:
            self.saved = (self.clock.rate, self.clock.autojump_threshold)
            self.clock.rate = 1.0
            self.clock.autojump_threshold = math.inf
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.clock.rate, self.clock.autojump_threshold = self.saved


def mock_clock_guard() -> Callable[[], contextlib.AbstractContextManager[None]] | None:
    """A guard for the running trio MockClock, or None (asyncio, or a real clock)."""
    from actors import current_backend

    if current_backend() != "trio":
        return None
    import trio
    import trio.testing

    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        return None
    return _RealTimeWhileInThreads(clock)
