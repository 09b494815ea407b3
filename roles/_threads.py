"""Run a role's plain (def) code in a daemon thread that a stop can abandon.

anyio's worker threads are not daemon threads on asyncio, so a role's ``run`` that never
returns would keep the role host process from exiting; a daemon thread of our own does not.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")

#: Entered around every wait for a role's thread, when set: roles.testing uses it to stop a
#: mock clock from jumping ahead while role code runs in a thread, where it cannot see.
thread_wait_guard: contextvars.ContextVar[Callable[[], contextlib.AbstractContextManager[None]] | None] = (
    contextvars.ContextVar("thread_wait_guard", default=None)
)


async def run_in_daemon_thread(func: Callable[..., T], *args: Any, name: str = "role") -> T:
    """Call ``func(*args)`` in a new daemon thread and return (or raise) what it does.

    If the caller is cancelled the thread is abandoned: it runs on until it returns or the
    process ends.
    """
    import anyio
    import anyio.from_thread
    import anyio.lowlevel

    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    outcome: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            outcome.append((True, func(*args)))
        except BaseException as error:  # handed to the awaiting task, which re-raises it
            outcome.append((False, error))
        # RunFinishedError: the event loop is gone, so nobody waits for the result any more.
        with contextlib.suppress(anyio.RunFinishedError):
            anyio.from_thread.run_sync(done.set, token=token)

    guard = thread_wait_guard.get()
    with guard() if guard is not None else contextlib.nullcontext():
        threading.Thread(target=target, name=name, daemon=True).start()
        await done.wait()
    succeeded, value = outcome[0]
    if succeeded:
        return cast(T, value)
    raise value
