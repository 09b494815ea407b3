"""RoleEntryPoint: the class a role subclasses so that its host can start, run and stop it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class RoleEntryPoint:
    """Subclass this in your role's code; the role host finds the subclass and runs it.

    Override any of the three methods, as ``async def`` or as plain ``def`` (a plain method
    runs in a worker thread, so it may block)::

        class Worker(RoleEntryPoint):
            async def on_start(self) -> bool:
                return True          # False: the role process is ended and restarted

            async def run(self) -> None:
                ...                  # returning recycles the role (stopping, on_stop, restart)

            async def on_stop(self) -> None:
                ...                  # bounded by on_stop_timeout (300 s by default)

    ``on_start`` runs first; once it returns True the instance is Ready and ``run`` starts. An
    exception from any method ends the role process, which is then restarted; after an error
    in on_start or run the ``stopping`` event and on_stop are not called (as in Azure). A
    return value of None from on_start counts as True; any other value that is not a bool
    fails the start.
    """

    def on_start(self) -> bool | Awaitable[bool]:
        """Prepare the role; return False to fail the start. The default returns True."""
        return _value(True)

    def run(self) -> Awaitable[None] | None:
        """Do the role's work; returning recycles the instance. The default waits forever."""
        return _forever()

    def on_stop(self) -> Awaitable[None] | None:
        """Clean up before the process ends; bounded by on_stop_timeout. The default does nothing."""
        return _value(None)


async def _value(value: T) -> T:
    return value


async def _forever() -> None:
    import anyio  # only role hosts call this: keep `import roles` light

    await anyio.sleep_forever()
