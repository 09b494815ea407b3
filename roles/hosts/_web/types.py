"""ASGI type aliases shared by the web worker modules (loose dicts, as ASGI itself is)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias

Scope: TypeAlias = dict[str, Any]
Message: TypeAlias = dict[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
SyncSpawn: TypeAlias = Callable[..., Awaitable[Any]]
CallSoon: TypeAlias = Callable[..., Any]


class ASGIApp(Protocol):
    """An ASGI 3 application."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send, /) -> None:
        """Handle one connection scope."""


class Handler(Protocol):
    """Hypercorn's app-wrapper calling convention: ASGI plus the thread hooks WSGI needs."""

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        sync_spawn: SyncSpawn,
        call_soon: CallSoon,
        /,
    ) -> None:
        """Handle one connection scope; `sync_spawn`/`call_soon` run WSGI code in a thread."""
