"""Timing helpers the benchmarks share."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable


async def seconds_per_call(call: Callable[[], Awaitable[object]], n: int) -> float:
    """The mean wall-clock seconds of ``n`` awaited calls of ``call``, one after another."""
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n
