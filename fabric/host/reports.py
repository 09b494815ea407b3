"""A host's status reports to its controller: at once, except the steps of a boot.

On its way to ReadyRole an instance passes CreatingVM, StartingVM, CreatingRole and
StartingRole; while it does, it is out of rotation, so none of these steps changes what the
load balancer does. A host holds such steps back up to HOLD_SECONDS and sends them with the
next report, in one InstanceStatusesChanged: a host booting its instances sends about one
message per instance instead of five (at 10,000 hosts, the controller read 100,000 reports to
place 20,000 instances, a fifth of its work).

Anything else (ReadyRole, a failure, a stop, any step of an instance that was up) leaves at
once, after what was held: rotation follows in milliseconds as before, and each instance's
statuses arrive in the order they happened. A heartbeat, which carries every status as it is
now, is sent after what was held (``flush`` first), never ahead of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from fabric.host.messages import (
    MAX_STATUS_BATCH,
    InstanceStatusChanged,
    InstanceStatusesChanged,
    StatusChange,
)

#: the steps of a boot that may wait (the instance is not in rotation before or after them)
HELD: frozenset[str] = frozenset({"CreatingVM", "StartingVM", "CreatingRole", "StartingRole"})
#: statuses of an instance in rotation (or that may be): a step after one of them goes at once
UP: frozenset[str] = frozenset({"ReadyRole", "BusyRole"})
#: how long a step of a boot may wait for company
HOLD_SECONDS = 0.25


class StatusReports:
    """The status changes of one host's instances on their way to its controller.

    Args:
        host_id: the host's id.
        send: tells the controller one message (InstanceStatusChanged or InstanceStatusesChanged).
        arm: called with these reports when a change is held and none was: it must see that
            ``flush_held`` runs about HOLD_SECONDS later (a host agent starts ``flush_later``
            in a task; the benchmark's simulator of 10,000 hosts keeps one timer for all).
    """

    def __init__(
        self,
        host_id: str,
        send: Callable[[Any], Awaitable[None]],
        arm: Callable[[StatusReports], None],
    ) -> None:
        self.host_id = host_id
        self._send = send
        self._arm = arm
        self._held: list[StatusChange] = []
        self._armed = False
        #: messages leave one at a time, in order (a send may wait for room)
        self._sending: anyio.Lock | None = None

    async def report(self, change: StatusChange, *, was: str) -> None:
        """Send ``change`` (its instance was ``was`` before it) now, or hold it back a moment."""
        self._held.append(change)
        if change.status.status in HELD and was not in UP and len(self._held) < MAX_STATUS_BATCH:
            if not self._armed:
                self._armed = True
                self._arm(self)
            return
        await self.flush()

    async def flush(self) -> None:
        """Send every change held, in order, in one message."""
        if self._sending is None:
            self._sending = anyio.Lock(fast_acquire=True)  # no checkpoint when free
        elif not self._held and not self._sending.locked():
            return  # nothing held nor on its way: no lock to take (before every heartbeat)
        async with self._sending:
            if not self._held:
                return
            batch, self._held = self._held, []
            if len(batch) == 1:
                one = batch[0]
                await self._send(
                    InstanceStatusChanged(
                        host_id=self.host_id, instance_id=one.instance_id, status=one.status, uid=one.uid
                    )
                )
            else:
                await self._send(InstanceStatusesChanged(host_id=self.host_id, changes=batch))

    async def flush_held(self) -> None:
        """The held changes' time is up: send them (and hold the next ones afresh)."""
        self._armed = False
        await self.flush()

    async def flush_later(self) -> None:
        """``flush_held`` HOLD_SECONDS from now (a task of its own)."""
        await anyio.sleep(HOLD_SECONDS)
        await self.flush_held()
