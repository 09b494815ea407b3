"""Watches: a record of every change of a deployment's instances (status, host, rotation), with
the fabric's clock, from which a report tells how long each fault took to detect and heal.

A watch wakes on every status change the controller records and looks again every
``POLL_INTERVAL`` (a load balancer may drop an instance that refused a connection without any
status change). Only a running watch costs anything; one not polled for its lease ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import anyio

from fabric.controller.chaos import targets
from fabric.controller.chaos.messages import WatchBatch, WatchEvent
from fabric.controller.state import ControllerState

POLL_INTERVAL: Final = 0.05
#: events kept per watch; older ones are dropped (``first`` moves on)
MAX_EVENTS: Final = 50_000


@dataclass
class Watch:
    """One watch of one deployment slot."""

    id: str
    service: str
    slot: str
    lease: float
    lease_until: float = 0.0
    events: list[WatchEvent] = field(default_factory=list)
    first: int = 0
    last: dict[str, tuple[str, str, bool | None]] = field(default_factory=dict)
    active: bool = True
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def renew(self) -> None:
        """Poll seen: keep watching for another lease."""
        self.lease_until = anyio.current_time() + self.lease

    def batch(self, since: int) -> WatchBatch:
        """The events from number ``since`` on (or the oldest kept)."""
        start = max(since, self.first)
        return WatchBatch(
            id=self.id,
            now=anyio.current_time(),
            first=start,
            next=self.first + len(self.events),
            events=self.events[start - self.first :],
            active=self.active,
        )

    def look(self, state: ControllerState) -> None:
        """Record what changed since the last look."""
        dep = state.find(self.service, self.slot)
        if dep is None:
            return
        now = anyio.current_time()
        for inst in dep.ordered():
            seen = (inst.status, inst.host_id, targets.in_rotation(state, dep, inst))
            if self.last.get(inst.id) != seen:
                self.last[inst.id] = seen
                self.events.append(
                    WatchEvent(t=now, instance=inst.id, status=seen[0], host=seen[1], rotation=seen[2])
                )
        if len(self.events) > MAX_EVENTS:
            drop = len(self.events) - MAX_EVENTS
            del self.events[:drop]
            self.first += drop

    async def run(self, state: ControllerState) -> None:
        """Look on every change and every POLL_INTERVAL until the lease runs out or it is stopped."""
        with self.scope:
            while anyio.current_time() < self.lease_until:
                self.look(state)
                with anyio.move_on_after(POLL_INTERVAL):
                    await state.changed()
        self.active = False
