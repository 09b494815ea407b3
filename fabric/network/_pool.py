"""The backend pool: who is in rotation, round robin over them, and their counters.

Passive health checks, as nginx's ``max_fails``/``fail_timeout`` and HAProxy's ``observe layer4``
do them: an instance that refuses a connect is skipped, and retried by one trial connection
after a delay that doubles while it keeps refusing (``retry_delay``); a connect that succeeds
puts it back at once.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Collection, Iterable

import anyio
import msgspec

from ._errors import UnknownBackendError
from ._model import Backend, BackendStats

log = logging.getLogger("fabric.network")

#: Seconds before the first trial connection to an instance that refused one.
RETRY_FIRST = 0.25
#: The longest wait between two trials, however long the instance keeps refusing.
RETRY_MAX = 10.0
#: Clients that may wait at once for an instance to enter an empty rotation; more are reset.
MAX_WAITING = 1024


def retry_delay(failures: int) -> float:
    """Seconds to wait before the next trial after ``failures`` refused connects in a row."""
    # The exponent is capped so a long outage cannot overflow the float.
    return min(RETRY_FIRST * 2.0 ** min(failures - 1, 32), RETRY_MAX)


class Entry:
    """A backend's live state; connections keep theirs while it drains out of the pool."""

    __slots__ = (
        "active",
        "backend",
        "connections",
        "failures",
        "probe_ok",
        "refusals",
        "removed",
        "retry_at",
        "traffic",
        "trial",
    )

    def __init__(self, backend: Backend, *, probed: bool) -> None:
        self.backend = backend
        # With a probe an instance is unknown, hence out, until a probe first passes.
        self.probe_ok = not probed
        # Passive health: refused connects in a row (0: healthy), when the next trial may go,
        # and whether a trial connection is under way.
        self.failures = 0
        self.retry_at = 0.0
        self.trial = False
        self.removed = False
        self.active = 0
        self.connections = 0
        self.refusals = 0
        # [bytes up, bytes down], a list so the pump adds to it by index.
        self.traffic = [0, 0]


class Pool:
    """The set of backends of one endpoint and the rotation derived from it.

    Rotation: with a probe, the instances whose probe passes; else the Ready and not
    Busy ones (all of them with ``ignore_status``). One of them whose last connect was
    refused is "refusing": it gets only a trial connection once its retry delay is over
    (or when every other one refuses too), until a connect succeeds, its status changes
    to Ready again or a probe passes.
    """

    def __init__(self, *, ignore_status: bool, probed: bool, keep_refused: bool = False) -> None:
        self._ignore_status = ignore_status
        self._probed = probed
        # A single-instance forwarder keeps trying its instance after a refusal.
        self._keep_refused = keep_refused
        self._entries: dict[str, Entry] = {}
        self._draining: set[Entry] = set()
        #: the instances that may take connections by their status (refusing ones included)
        self.candidates: list[Entry] = []
        self._next = 0
        # Set (and dropped) when candidates appear, for clients waiting for one.
        self._arrived: anyio.Event | None = None
        self._waiting = 0
        # Bytes moved by backends that have left the pool and finished draining.
        self.retired = [0, 0]
        # Set (and dropped) when a connection ends, for callers waiting for a drain.
        self._ended: anyio.Event | None = None
        #: called when the rotation or an instance's refusing state may have changed
        self.changed: Callable[[], None] | None = None

    def entries(self) -> list[Entry]:
        """The backends in the pool, in instance id order."""
        return [self._entries[k] for k in sorted(self._entries)]

    def get(self, instance_id: str) -> Entry:
        """The entry of ``instance_id``; raises UnknownBackendError."""
        try:
            return self._entries[instance_id]
        except KeyError:
            raise UnknownBackendError(
                f"instance {instance_id!r} is not behind this endpoint: call set_backends first"
            ) from None

    def set_backends(self, backends: Iterable[Backend]) -> tuple[list[Entry], list[Entry]]:
        """Replace the pool; returns (added, removed) entries. Removed ones drain."""
        new = {b.instance_id: b for b in backends}
        added: list[Entry] = []
        removed: list[Entry] = []
        for key in list(self._entries):
            if key not in new:
                gone = self._entries.pop(key)
                self._retire(gone)
                removed.append(gone)
        for key, backend in new.items():
            entry: Entry | None = self._entries.get(key)
            if entry is not None and (entry.backend.host, entry.backend.port) != (
                backend.host,
                backend.port,
            ):
                # A new address is a new process: its connections are its own.
                self._retire(entry)
                removed.append(entry)
                entry = None
            if entry is None:
                entry = Entry(backend, probed=self._probed)
                self._entries[key] = entry
                added.append(entry)
            else:
                if backend.ready and backend != entry.backend:
                    self._forgive(entry)
                entry.backend = backend
        self._recompute()
        return added, removed

    def update(self, instance_id: str, *, ready: bool | None, busy: bool | None) -> None:
        """Change one backend's status; a report of Ready forgives a refused connect."""
        entry = self.get(instance_id)
        backend = entry.backend
        if ready is not None:
            backend = _replace(backend, ready=ready)
            if ready:
                self._forgive(entry)
        if busy is not None:
            backend = _replace(backend, busy=busy)
        was = self.candidate(entry)
        entry.backend = backend
        if self.candidate(entry) != was:
            self._move(entry)  # one instance in or out: the others' order stands

    def probe_result(self, entry: Entry, ok: bool) -> None:
        """Record a probe verdict: a pass brings the instance back, even after a refusal."""
        if ok:
            changed = not entry.probe_ok or entry.failures > 0
            entry.probe_ok = True
            self._forgive(entry)
        else:
            changed = entry.probe_ok
            entry.probe_ok = False
        if changed and not entry.removed:
            log.info(
                "instance %s %s rotation (probe %s)",
                entry.backend.instance_id,
                "enters" if ok else "leaves",
                "passed" if ok else "failing",
            )
            self._recompute()

    def set_probed(self, probed: bool) -> None:
        """Judge instances by a probe from now on, or by their status again; with a new probe
        each one is out until its probe first passes."""
        if probed != self._probed:
            self._probed = probed
            for entry in self._entries.values():
                entry.probe_ok = not probed
            self._recompute()

    @property
    def rotation(self) -> list[Entry]:
        """The instances new connections go to now: candidates that are not refusing."""
        return [e for e in self.candidates if not e.failures]

    async def wait_for_candidates(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an instance to enter rotation; False if none did.

        At most MAX_WAITING callers wait at once: the others get False at once.
        """
        if self.candidates:
            return True
        if self._waiting >= MAX_WAITING or timeout <= 0:
            return False
        self._waiting += 1
        try:
            with anyio.move_on_after(timeout):
                while not self.candidates:
                    if self._arrived is None:
                        self._arrived = anyio.Event()
                    await self._arrived.wait()
                return True
            return False
        finally:
            self._waiting -= 1

    def refused(self, entry: Entry) -> None:
        """A connect to ``entry`` failed: count it and retry it only after a growing delay."""
        entry.refusals += 1
        entry.trial = False
        if self._keep_refused:
            return
        entry.failures += 1
        delay = retry_delay(entry.failures)
        entry.retry_at = anyio.current_time() + delay
        if entry.failures == 1 and self.changed is not None:
            self.changed()
        if entry.removed:
            return
        if entry.failures == 1:
            log.warning(
                "instance %s refused a connection: out of rotation, retried in %g s",
                entry.backend.instance_id,
                delay,
            )
        else:
            log.info(
                "instance %s refused again (%d in a row): retried in %g s",
                entry.backend.instance_id,
                entry.failures,
                delay,
            )

    def connected(self, entry: Entry) -> None:
        """A connect to a refusing ``entry`` succeeded: back in rotation at once."""
        entry.trial = False
        if entry.failures:
            entry.failures = 0
            if self.changed is not None:
                self.changed()
            if not entry.removed:
                log.info("instance %s accepts connections again: back in rotation", entry.backend.instance_id)

    def abandoned(self, entry: Entry) -> None:
        """A connect to ``entry`` was given up (the client left): another trial may go."""
        entry.trial = False

    def pick(self, tried: set[Entry]) -> Entry | None:
        """The next instance to connect to (round robin) not yet tried, or None.

        A healthy instance first; else a refusing one whose trial is due (it then has its
        trial under way); else, rather than fail the client, any refusing one left.
        """
        candidates = self.candidates
        n = len(candidates)
        anyway: Entry | None = None
        now = -1.0
        for _ in range(n):
            entry = candidates[self._next % n]
            self._next += 1
            if entry in tried:
                continue
            if not entry.failures:
                return entry
            if not entry.trial:
                if now < 0:
                    now = anyio.current_time()
                if now >= entry.retry_at:
                    entry.trial = True
                    return entry
            if anyway is None:
                anyway = entry
        return anyway

    def closed(self, entry: Entry) -> None:
        """A connection to ``entry`` ended."""
        entry.active -= 1
        if self._ended is not None:
            self._ended.set()
            self._ended = None
        if entry.removed and not entry.active and entry in self._draining:
            self._draining.discard(entry)
            self._add_retired(entry)

    def active_of(self, instance_ids: Collection[str]) -> int:
        """Open connections to ``instance_ids``, in the pool or draining out of it."""
        return sum(
            e.active
            for e in [*self._entries.values(), *self._draining]
            if e.backend.instance_id in instance_ids
        )

    async def wait_drained(self, instance_ids: Collection[str]) -> None:
        """Wait until no connection to ``instance_ids`` is open (woken by each one that ends)."""
        while self.active_of(instance_ids):
            if self._ended is None:
                self._ended = anyio.Event()
            await self._ended.wait()

    def traffic(self) -> tuple[int, int]:
        """Bytes (up, down) moved since the pool was made, by all its backends."""
        up, down = self.retired
        for entry in [*self._entries.values(), *self._draining]:
            up += entry.traffic[0]
            down += entry.traffic[1]
        return up, down

    def _retire(self, entry: Entry) -> None:
        entry.removed = True
        if entry.active:
            self._draining.add(entry)
        else:
            self._add_retired(entry)

    def _add_retired(self, entry: Entry) -> None:
        self.retired[0] += entry.traffic[0]
        self.retired[1] += entry.traffic[1]

    def _forgive(self, entry: Entry) -> None:
        if entry.failures and self.changed is not None:
            self.changed()
        entry.failures = 0
        entry.trial = False

    def in_rotation(self, entry: Entry) -> bool:
        """Whether new connections go to ``entry``: a candidate that is not refusing."""
        return not entry.failures and self.candidate(entry)

    def candidate(self, entry: Entry) -> bool:
        """Whether ``entry`` may take connections by its status or probe (refusing or not)."""
        if entry.removed:
            return False
        if self._probed:
            return entry.probe_ok
        backend = entry.backend
        return self._ignore_status or (backend.ready and not backend.busy)

    def stats(self) -> tuple[BackendStats, ...]:
        """Counters of the backends in the pool, then of those still draining."""
        draining = sorted(self._draining, key=lambda e: e.backend.instance_id)
        now = anyio.current_time()
        return tuple(_stats(e, self.in_rotation(e), now) for e in [*self.entries(), *draining])

    def _move(self, entry: Entry) -> None:
        """Put ``entry`` into the candidates (in instance id order) or take it out, as it now is."""
        key = entry.backend.instance_id
        i = bisect.bisect_left(self.candidates, key, key=lambda e: e.backend.instance_id)
        present = i < len(self.candidates) and self.candidates[i] is entry
        if self.candidate(entry) and not present:
            self.candidates.insert(i, entry)
            if self._arrived is not None:
                self._arrived.set()
                self._arrived = None
        elif present and not self.candidate(entry):
            del self.candidates[i]
        if self.changed is not None:
            self.changed()

    def _recompute(self) -> None:
        self.candidates = [e for e in self.entries() if self.candidate(e)]
        if self.changed is not None:
            self.changed()
        if self.candidates and self._arrived is not None:
            self._arrived.set()
            self._arrived = None


def _replace(backend: Backend, **changes: bool) -> Backend:
    return msgspec.structs.replace(backend, **changes)


def _stats(entry: Entry, in_rotation: bool, now: float) -> BackendStats:
    b = entry.backend
    refusing = entry.failures > 0 and not entry.removed
    return BackendStats(
        instance_id=b.instance_id,
        host=b.host,
        port=b.port,
        in_rotation=in_rotation,
        draining=entry.removed,
        active=entry.active,
        connections=entry.connections,
        refused=entry.refusals,
        bytes_up=entry.traffic[0],
        bytes_down=entry.traffic[1],
        refusing=refusing,
        refused_in_a_row=entry.failures,
        retry_in=max(0.0, entry.retry_at - now) if refusing else 0.0,
    )
