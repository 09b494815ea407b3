"""A first join tried again while the controller's join port does not answer (connection
refused or reset, closed, timed out), with exponential backoff and full jitter, for a bounded
time; a refusal (bad token, wrong CA hash) ends it at once."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from fabric.cluster.join import JoinUnreachable

T = TypeVar("T")

#: how long a first join tries again by default, in seconds
PATIENCE = 120.0
#: the longest the next try waits is the backoff, from FIRST doubling up to LONGEST
FIRST, LONGEST = 0.5, 10.0


async def patiently(attempt: Callable[[], Awaitable[T]], patience: float, say: Callable[[str], object]) -> T:
    """``attempt()``, tried again after each JoinUnreachable until ``patience`` seconds passed
    (each try waits up to the backoff, at random: hosts started together do not retry together).

    Raises:
        JoinUnreachable: still unreachable after ``patience`` seconds (0: tried once).
        JoinRefused: refused (never tried again).
    """
    deadline = anyio.current_time() + patience
    backoff, tries = FIRST, 1
    while True:
        try:
            return await attempt()
        except JoinUnreachable as exc:
            left = deadline - anyio.current_time()
            if left <= 0:
                if tries == 1:
                    raise
                raise JoinUnreachable(f"{exc} (tried {tries} times in {patience:g} s)") from None
            wait = min(left, random.uniform(0.0, backoff))
            say(f"{exc}; trying again in {wait:.1f} s (giving up in {left:.1f} s)")
            await anyio.sleep(wait)
            backoff, tries = min(LONGEST, backoff * 2), tries + 1
