"""Run an ASGI site's lifespan protocol: startup before serving, shutdown after."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .types import ASGIApp, Message

logger = logging.getLogger(__name__)


class LifespanError(Exception):
    """An ASGI application reported that its lifespan startup failed."""


@asynccontextmanager
async def site_lifespan(
    app: ASGIApp, label: str, *, startup_timeout: float = 60.0, shutdown_timeout: float = 60.0
) -> AsyncIterator[dict[str, Any] | None]:
    """Start `app`'s lifespan, yield its state dict, and shut it down on exit.

    Yields None for an application without lifespan support (it raised or returned at once).
    Raises LifespanError, naming `label`, if the application sends lifespan.startup.failed or
    does not answer the startup event within `startup_timeout` seconds.
    """
    to_app: MemoryObjectSendStream[Message]
    app_inbox: MemoryObjectReceiveStream[Message]
    to_app, app_inbox = anyio.create_memory_object_stream[Message](2)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](2)
    state: dict[str, Any] = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}

    async def run_app() -> None:
        async with app_outbox:
            try:
                await app(scope, app_inbox.receive, app_outbox.send)
            except Exception:  # an app without lifespan support usually raises on the scope
                logger.debug("%s: lifespan not supported", label, exc_info=True)

    failure: str | None = None
    async with anyio.create_task_group() as tasks, to_app, from_app:
        tasks.start_soon(run_app)
        await to_app.send({"type": "lifespan.startup"})
        reply: Message | None = None
        with anyio.move_on_after(startup_timeout) as waited:
            reply = await _next(from_app)
        if waited.cancelled_caught:
            failure = f"no answer within {startup_timeout:g} s"
            tasks.cancel_scope.cancel()
        elif reply is None:
            try:
                yield None
            finally:
                tasks.cancel_scope.cancel()
        elif reply["type"] != "lifespan.startup.complete":
            failure = str(reply.get("message") or reply["type"])
            tasks.cancel_scope.cancel()
        else:
            try:
                yield state
            finally:
                with anyio.move_on_after(shutdown_timeout, shield=True):
                    await to_app.send({"type": "lifespan.shutdown"})
                    reply = await _next(from_app)
                    if reply is not None and reply["type"] == "lifespan.shutdown.failed":
                        logger.error("%s: lifespan shutdown failed: %s", label, reply.get("message"))
                tasks.cancel_scope.cancel()
    if failure is not None:
        # Raised outside the task group so the caller sees it plainly, not in an exception group.
        raise LifespanError(f"{label}: lifespan startup failed: {failure}")


async def _next(stream: MemoryObjectReceiveStream[Message]) -> Message | None:
    try:
        return await stream.receive()
    except anyio.EndOfStream:
        return None
