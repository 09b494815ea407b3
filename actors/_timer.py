"""Ask deadlines: one task per actor system fails the asks that outlive their timeout.

A cancel scope with a deadline costs about 10 us on trio to enter and leave, as much as the
rest of a local ask; so asks register their deadline here instead, and one watcher task wakes
only when the earliest deadline passes.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

import anyio

from ._errors import AskTimeout
from ._loopcalls import loop_calls
from ._mailbox import Signal, new_event

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._mailbox import AwaitedReply

#: A deadline queue is swept of answered asks whenever it doubles past this length.
_COMPACT_AT = 256


class _Deadline(NamedTuple):
    when: float
    reply: AwaitedReply
    actor: str
    message_type: str


class AskTimer:
    """Fails each watched ask with AskTimeout unless it is answered in time."""

    def __init__(self, task_group: TaskGroup) -> None:
        self._task_group = task_group
        self._now = loop_calls().current_time
        # One queue per timeout value: deadlines with the same timeout come in order, so each
        # queue is sorted and only its head needs watching.
        self._queues: dict[float, deque[_Deadline]] = {}
        self._compact_at: dict[float, int] = {}
        self._running = False
        self._wake: Signal | None = None
        self._wake_at = math.inf

    def watch(self, reply: AwaitedReply, timeout: float, actor: str, message: object) -> None:
        """Fail ``reply`` with AskTimeout unless it settles within ``timeout`` seconds."""
        when = self._now() + timeout
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
            self._compact_at[timeout] = _COMPACT_AT
        else:
            while queue and queue[0].reply.settled:
                queue.popleft()
            if len(queue) >= self._compact_at[timeout]:
                # An old unanswered ask at the head keeps answered ones queued behind it.
                live = [d for d in queue if not d.reply.settled]
                queue.clear()
                queue.extend(live)
                self._compact_at[timeout] = max(_COMPACT_AT, 2 * len(queue))
        queue.append(_Deadline(when, reply, actor, type(message).__name__))
        if when < self._wake_at:
            self._wake_at = when
            if not self._running:
                self._running = True
                self._task_group.start_soon(self._run, name="actors.ask-timer")
            elif self._wake is not None:
                self._wake.set()

    async def _run(self) -> None:
        while True:
            now = self._now()
            self._wake_at = self._expire(now)
            self._wake = new_event()
            with anyio.move_on_after(self._wake_at - now):
                await self._wake.wait()

    def _expire(self, now: float) -> float:
        """Fail every ask past its deadline; return the earliest deadline still pending."""
        earliest = math.inf
        for timeout, queue in list(self._queues.items()):
            while queue:
                head = queue[0]
                if head.reply.settled:
                    queue.popleft()
                elif head.when <= now:
                    queue.popleft()
                    head.reply.expire(
                        AskTimeout(
                            f"actor {head.actor!r} did not answer {head.message_type} within {timeout} s"
                        )
                    )
                else:
                    earliest = min(earliest, head.when)
                    break
            if not queue:
                del self._queues[timeout], self._compact_at[timeout]
        return earliest
