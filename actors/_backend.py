"""Which anyio backend runs the current task: the one place that asks (sniffio)."""

from __future__ import annotations

from typing import Literal, TypeAlias

from sniffio import current_async_library

Backend: TypeAlias = Literal["trio", "asyncio"]


def current_backend() -> Backend:
    """The anyio backend running the current task: "trio" or "asyncio".

    Code that must call a backend's own API (hypercorn's server, the loop calls on an ask's hot
    path) switches on this. Raises sniffio.AsyncLibraryNotFoundError outside an event loop.
    """
    return "trio" if current_async_library() == "trio" else "asyncio"
