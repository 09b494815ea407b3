"""The few event-loop calls on the hot path of an ask, bound once per backend.

anyio's portable functions look the backend up on every call (a microsecond or two each); an ask
across a link makes several such calls per message, so it uses the backend's own functions,
found once per backend here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._backend import Backend, current_backend

if TYPE_CHECKING:
    import asyncio


@dataclass(frozen=True, slots=True)
class LoopCalls:
    """One backend's own versions of the calls a link makes per message."""

    #: wait until a file descriptor is readable; raises ``closed_error`` after notify_closing
    wait_readable: Callable[[int], Awaitable[None]]
    #: wake whoever waits on a file descriptor (with ``closed_error``)
    notify_closing: Callable[[int], None]
    closed_error: type[Exception]
    #: the running task, as an object that stays the same for the task's whole life
    current_task: Callable[[], Any]
    #: the loop's clock (a test's autojump clock, when there is one)
    current_time: Callable[[], float]
    #: raise if the task is cancelled, without yielding (the checkpoint of a tell that need
    #: not wait)
    checkpoint_if_cancelled: Callable[[], Awaitable[None]]


_by_backend: dict[Backend, LoopCalls] = {}


def loop_calls() -> LoopCalls:
    """The calls of the event loop running now."""
    backend = current_backend()
    try:
        return _by_backend[backend]
    except KeyError:
        pass
    if backend == "trio":
        import trio

        calls = LoopCalls(
            trio.lowlevel.wait_readable,
            trio.lowlevel.notify_closing,
            trio.ClosedResourceError,
            trio.lowlevel.current_task,
            trio.current_time,
            trio.lowlevel.checkpoint_if_cancelled,
        )
    else:
        import asyncio  # here, not above: a process on trio need not import asyncio (~15 ms)

        calls = LoopCalls(
            _asyncio_wait_readable,
            _asyncio_notify_closing,
            anyio.ClosedResourceError,
            asyncio.current_task,
            anyio.current_time,
            anyio.lowlevel.checkpoint_if_cancelled,
        )
    _by_backend[backend] = calls
    return calls


# anyio's asyncio versions keep their waiters in a context variable, which a task sees only for
# the descriptors it waits on itself; notify_closing from another task would miss them. File
# descriptors are unique within a process, so one table serves every loop.
_asyncio_readers: dict[int, asyncio.Future[bool]] = {}


async def _asyncio_wait_readable(fd: int) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(True)

    _asyncio_readers[fd] = ready
    loop.add_reader(fd, on_readable)
    try:
        readable = await ready
    finally:
        if _asyncio_readers.get(fd) is ready:  # else notify_closing unregistered it already
            del _asyncio_readers[fd]
            loop.remove_reader(fd)
    if not readable:
        raise anyio.ClosedResourceError


def _asyncio_notify_closing(fd: int) -> None:
    ready = _asyncio_readers.pop(fd, None)
    if ready is not None:
        import asyncio

        # Unregistered now, not when the woken task runs: another may wait on fd before that.
        asyncio.get_running_loop().remove_reader(fd)
        if not ready.done():
            ready.set_result(False)
