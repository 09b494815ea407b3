"""RoleEnvironment events: subscribable handler lists and the arguments each event passes.

A handler is any callable taking the event's arguments; it may be a plain function or an
``async def``. Async handlers run on the role host's event loop; plain functions run in a
worker thread, so a slow one does not stall the host's answers to the bootstrapper. Handlers
run one after another, in the order they subscribed. An exception in a handler is an
unhandled error of the role: the role host reports it as failed and its process is restarted,
as an unhandled exception in an Azure event handler ends the role process.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from ._threads import run_in_daemon_thread
from .environment_data import Change

__all__ = [
    "Event",
    "Handler",
    "RoleEnvironmentChangedEventArgs",
    "RoleEnvironmentChangingEventArgs",
    "RoleEnvironmentStoppingEventArgs",
    "RoleInstanceStatusCheckEventArgs",
    "SimultaneousChangedEventArgs",
    "SimultaneousChangingEventArgs",
]


class RoleEnvironmentChangingEventArgs:
    """Passed to ``changing`` handlers: the coming changes; set ``cancel = True`` to recycle.

    Cancelling takes the instance offline, recycles it and applies the change on restart.
    """

    def __init__(self, changes: Sequence[Change]) -> None:
        """Describe the pending ``changes``; nobody has cancelled yet."""
        self.changes: list[Change] = list(changes)
        self.cancel = False


class RoleEnvironmentChangedEventArgs:
    """Passed to ``changed`` handlers: the changes now in force."""

    def __init__(self, changes: Sequence[Change]) -> None:
        """Describe the applied ``changes``."""
        self.changes: list[Change] = list(changes)


class RoleInstanceStatusCheckEventArgs:
    """Passed to ``status_check`` handlers: call ``set_busy()`` to leave load-balancer rotation.

    Busy lasts until the next status check, whose handlers must call set_busy() again to stay
    out of rotation.
    """

    def __init__(self) -> None:
        """Start as not busy."""
        self._busy = False

    def set_busy(self) -> None:
        """Report the instance as Busy for this status check."""
        self._busy = True

    @property
    def busy(self) -> bool:
        """True once a handler has called set_busy()."""
        return self._busy


class RoleEnvironmentStoppingEventArgs:
    """Passed to ``stopping`` handlers: the instance is about to stop (on_stop comes next)."""


class SimultaneousChangingEventArgs:
    """Passed to ``simultaneous_changing`` handlers (Blast topology discovery): no cancel."""

    def __init__(self, changes: Sequence[Change]) -> None:
        """Describe the pending topology ``changes``."""
        self.changes: list[Change] = list(changes)


class SimultaneousChangedEventArgs:
    """Passed to ``simultaneous_changed`` handlers: the new topology is in force."""

    def __init__(self, changes: Sequence[Change]) -> None:
        """Describe the applied topology ``changes``."""
        self.changes: list[Change] = list(changes)


ArgsT = TypeVar("ArgsT")

#: What an event calls: a function or an async function taking the event's arguments.
Handler = Callable[[ArgsT], "Awaitable[None] | None"]


class Event(Generic[ArgsT]):
    """One RoleEnvironment event: a list of handlers, raised by the role host.

    Subscribe with ``event.subscribe(handler)`` (also usable as a decorator) or
    ``event += handler``; unsubscribe with ``event.unsubscribe(handler)`` or ``event -= handler``.
    """

    def __init__(self, name: str) -> None:
        """Create an event called ``name`` with no handlers."""
        self.name = name
        self._handlers: list[Handler[ArgsT]] = []

    def subscribe(self, handler: Handler[ArgsT]) -> Handler[ArgsT]:
        """Call ``handler`` each time the event is raised; returns it, so it works as a decorator."""
        if not callable(handler):
            raise TypeError(f"{self.name} handlers must be callable, not {type(handler).__name__}")
        self._handlers.append(handler)
        return handler

    def unsubscribe(self, handler: Handler[ArgsT]) -> None:
        """Stop calling ``handler``; a handler that is not subscribed is ignored (as in .NET)."""
        for index in range(len(self._handlers) - 1, -1, -1):
            if self._handlers[index] == handler:
                del self._handlers[index]
                return

    def __iadd__(self, handler: Handler[ArgsT]) -> Event[ArgsT]:
        """``event += handler`` subscribes."""
        self.subscribe(handler)
        return self

    def __isub__(self, handler: Handler[ArgsT]) -> Event[ArgsT]:
        """``event -= handler`` unsubscribes."""
        self.unsubscribe(handler)
        return self

    def __len__(self) -> int:
        """How many handlers are subscribed."""
        return len(self._handlers)

    def __repr__(self) -> str:
        return f"<Event {self.name} handlers={len(self._handlers)}>"

    async def emit(self, args: ArgsT) -> None:
        """Call every handler with ``args`` in subscription order (role hosts call this).

        Raises whatever a handler raises; the handlers after it are not called.
        """
        for handler in list(self._handlers):  # a handler may unsubscribe itself
            if inspect.iscoroutinefunction(handler):
                await handler(args)
                continue
            result = await run_in_daemon_thread(handler, args, name=f"{self.name} handler")
            if inspect.isawaitable(result):  # a plain function returning a coroutine
                await result

    def clear(self) -> None:
        """Remove every handler."""
        self._handlers.clear()
