"""The fabric's timeline: every status change, heal, upgrade step, configuration change and fault.

The controller (and its chaos agent, for faults) appends to one ``EventLog``; RDFE reads pages
of it (``ListEvents``), optionally waiting for the next event (a long poll that holds no
mailbox: the controller answers from a task). The log is a ring: it keeps the last
``Settings.events_kept`` events, and a reader that fell behind learns where the kept events
start (``EventPage.first``). Counts per kind are kept apart from the ring, so metrics never go
down when old events are dropped.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Literal

import anyio
import msgspec

from actors import Request

if TYPE_CHECKING:
    from fabric.controller.model import Deployment, Instance
    from fabric.controller.operations import Operations

EventKind = Literal["status", "heal", "upgrade", "config", "deployment", "fault"]
EVENT_KINDS: Final[tuple[EventKind, ...]] = ("status", "heal", "upgrade", "config", "deployment", "fault")

#: the most events one page may carry (a request asking for more gets this many)
MAX_PAGE: Final = 1000
#: the longest a reader may wait for the next event in one request
MAX_WAIT: Final = 60.0


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the timeline."""

    seq: int
    #: wall-clock time, ISO 8601 UTC with milliseconds
    at: str
    #: the fabric's clock (anyio.current_time()), for durations between events
    t: float
    kind: EventKind
    message: str
    service: str = ""
    slot: str = ""
    deployment: str = ""
    role: str = ""
    instance: str = ""
    host: str = ""
    #: a status event: the instance's new status (SM API value); a fault event: the fault's
    #: state (active or done when injected; undone, done or failed when it ended)
    status: str = ""
    #: a fault event: the fault's kind (kill, hang, partition...) and id (f1, f2...)
    fault: str = ""
    fault_id: str = ""


class ListEvents(msgspec.Struct, frozen=True, kw_only=True):
    """Ask a controller for its events after ``after`` (a seq), oldest first, matching the filters.

    With ``wait`` > 0 and nothing to answer yet, the answer waits up to that long for one.
    """

    after: int = 0
    limit: int = 100
    service: str | None = None
    role: str | None = None
    instance: str | None = None
    kind: str | None = None
    wait: float = 0.0


class OpenEventLog(Request["EventLog"], frozen=True):
    """Ask a controller for its EventLog itself (RDFE shares its process: the embedded fabric).

    A reader then waits on the log, not on the controller's mailbox (nor FFE's, which answers
    one request at a time).
    """


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of events: pass ``next`` as ``after`` to read on; ``first`` is the oldest kept."""

    events: list[Event]
    next: int
    first: int


class EventLog:
    """A bounded, append-only ring of events with waiters for the next one.

    Args:
        kept: how many events to keep (older ones are dropped; at least 1).
    """

    def __init__(self, kept: int = 10_000) -> None:
        self._events: deque[Event] = deque(maxlen=max(1, kept))
        self._seq = 0
        self._second = -1
        self._clock: Callable[[], float] | None = None
        self._second_iso = ""
        #: set when an event is appended (made only while a reader waits for one)
        self._appended: anyio.Event | None = None
        #: events recorded since start, by kind (not bounded by the ring)
        self.totals: Counter[str] = Counter()
        #: faults injected since start, by fault kind (the chaos agent counts them)
        self.faults: Counter[str] = Counter()
        #: how long the controller's operations took
        self.durations = Durations()

    @property
    def last_seq(self) -> int:
        """The seq of the newest event (0 before the first)."""
        return self._seq

    def record(
        self,
        kind: EventKind,
        message: str,
        *,
        dep: Deployment | None = None,
        inst: Instance | None = None,
        **fields: str,
    ) -> Event:
        """Append an event; ``dep`` and ``inst`` fill in service, slot, role, instance and host."""
        self._seq += 1
        if self._clock is None:
            # (this log's event loop: the first record runs in it; imported here, as the API
            # client imports this module for its messages and must not load the controller's)
            from fabric.controller.idle_clock import clock

            self._clock = clock()
        where: dict[str, str] = {}
        if dep is not None:
            where.update(service=dep.service, slot=dep.slot, deployment=dep.name)
        if inst is not None:
            where.update(role=inst.role, instance=inst.id, host=inst.host_id)
        where.update(fields)
        event = Event(seq=self._seq, at=self._now_iso(), t=self._clock(), kind=kind, message=message, **where)
        self._events.append(event)
        self.totals[kind] += 1
        if self._appended is not None:
            self._appended.set()
            self._appended = None
        return event

    def _now_iso(self) -> str:
        """The time now as ``datetime.isoformat(timespec="milliseconds")`` writes it in UTC,
        its seconds formatted once a second (a status event per instance and step at scale)."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_iso = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_iso}.{int((now - second) * 1000):03d}+00:00"

    def kept(self) -> list[Event]:
        """Every event kept, oldest first."""
        return list(self._events)

    def page(self, query: ListEvents) -> EventPage:
        """The events after ``query.after`` that match, at most ``query.limit`` (1..MAX_PAGE)."""
        limit = min(max(1, query.limit), MAX_PAGE)
        first = self._events[0].seq if self._events else self._seq + 1
        found: list[Event] = []
        scanned_to = max(query.after, first - 1)
        # seqs are consecutive in the ring, so the first candidate is found by arithmetic
        for event in itertools.islice(self._events, max(0, scanned_to - first + 1), None):
            scanned_to = event.seq
            if _matches(event, query):
                found.append(event)
                if len(found) == limit:
                    break
        return EventPage(events=found, next=scanned_to, first=first)

    async def wait_page(self, query: ListEvents) -> EventPage:
        """``page(query)``, waiting up to ``query.wait`` (at most MAX_WAIT) for a first match."""
        with anyio.move_on_after(min(max(0.0, query.wait), MAX_WAIT)):
            while True:
                page = self.page(query)
                if page.events or query.wait <= 0:
                    return page
                query = msgspec.structs.replace(query, after=page.next)
                if self._appended is None:
                    self._appended = anyio.Event()
                await self._appended.wait()
        return self.page(query)


def _matches(event: Event, query: ListEvents) -> bool:
    return (
        (query.service is None or event.service.lower() == query.service.lower())
        and (query.role is None or event.role.lower() == query.role.lower())
        and (query.instance is None or event.instance.lower() == query.instance.lower())
        and (query.kind is None or event.kind == query.kind)
    )


#: upper bounds (seconds) of the operation duration histogram's buckets
DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Durations:
    """A histogram of controller operation durations per operation kind (a bounded set of names)."""

    def __init__(self) -> None:
        #: kind -> (count per bucket, the last one +Inf; sum of seconds)
        self.kinds: dict[str, tuple[list[int], float]] = {}

    def observe(self, kind: str, seconds: float) -> None:
        """Count one operation of ``kind`` that took ``seconds``."""
        counts, total = self.kinds.get(kind, ([0] * (len(DURATION_BUCKETS) + 1), 0.0))
        index = next(
            (i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound), len(DURATION_BUCKETS)
        )
        counts[index] += 1
        self.kinds[kind] = (counts, total + seconds)


_OPERATION_EVENT: Final[dict[str, EventKind]] = {
    "ChangeDeploymentConfiguration": "config",
    "UpgradeDeployment": "upgrade",
    "WalkUpgradeDomain": "upgrade",
}


async def record_operation(
    log: EventLog,
    ops: Operations,
    kind: str,
    request_id: str,
    dep: Deployment,
    run: Callable[[], Awaitable[None]],
) -> None:
    """Run an operation (``run`` never raises), then time it and record how it ended."""
    event_kind = _OPERATION_EVENT.get(kind, "deployment")
    log.record(event_kind, f"{kind} started", dep=dep)
    started = anyio.current_time()
    await run()
    log.durations.observe(kind, anyio.current_time() - started)
    try:
        view = await ops.view(request_id)
    except Exception:  # the store is gone (the controller stops): nothing left to tell
        return
    outcome = view.description if view.status == "Succeeded" else view.error_message
    log.record(event_kind, f"{kind} {view.status}" + (f": {outcome}" if outcome else ""), dep=dep)
