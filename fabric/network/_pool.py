"""The backend pool: who is in rotation, round robin over them, and their counters."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import msgspec

from ._errors import UnknownBackendError
from ._model import Backend, BackendStats

log = logging.getLogger("fabric.network")


class Entry:
    """A backend's live state; connections keep theirs while it drains out of the pool."""

    __slots__ = (
        "active",
        "backend",
        "connections",
        "probe_ok",
        "refusals",
        "refused",
        "removed",
        "traffic",
    )

    def __init__(self, backend: Backend, *, probed: bool) -> None:
        self.backend = backend
        # With a probe an instance is unknown, hence out, until a probe first passes.
        self.probe_ok = not probed
        self.refused = False
        self.removed = False
        self.active = 0
        self.connections = 0
        self.refusals = 0
        # [bytes up, bytes down], a list so the pump adds to it by index.
        self.traffic = [0, 0]


class Pool:
    """The set of backends of one endpoint and the rotation derived from it.

    Rotation: with a probe, the instances whose probe passes; else the Ready and not
    Busy ones (all of them with ``ignore_status``); never one whose last connect was
    refused, until its status changes to Ready again or a probe passes.
    """

    def __init__(self, *, ignore_status: bool, probed: bool, keep_refused: bool = False) -> None:
        self._ignore_status = ignore_status
        self._probed = probed
        # A single-instance forwarder keeps trying its instance after a refusal.
        self._keep_refused = keep_refused
        self._entries: dict[str, Entry] = {}
        self._draining: set[Entry] = set()
        self.rotation: list[Entry] = []
        self._next = 0
        # Bytes moved by backends that have left the pool and finished draining.
        self.retired = [0, 0]

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
                    entry.refused = False
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
                entry.refused = False
        if busy is not None:
            backend = _replace(backend, busy=busy)
        entry.backend = backend
        self._recompute()

    def probe_result(self, entry: Entry, ok: bool) -> None:
        """Record a probe verdict: a pass brings the instance back, even after a refusal."""
        if ok:
            changed = not entry.probe_ok or entry.refused
            entry.probe_ok = True
            entry.refused = False
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

    def refused(self, entry: Entry) -> None:
        """A connect to ``entry`` failed: count it and take it out of rotation."""
        entry.refusals += 1
        if self._keep_refused or entry.refused:
            return
        entry.refused = True
        if not entry.removed:
            log.warning("instance %s refused a connection: out of rotation", entry.backend.instance_id)
            self._recompute()

    def pick(self, tried: set[Entry]) -> Entry | None:
        """The next backend in rotation (round robin) not yet tried, or None."""
        rotation = self.rotation
        n = len(rotation)
        for _ in range(n):
            entry = rotation[self._next % n]
            self._next += 1
            if entry not in tried:
                return entry
        return None

    def closed(self, entry: Entry) -> None:
        """A connection to ``entry`` ended."""
        entry.active -= 1
        if entry.removed and not entry.active and entry in self._draining:
            self._draining.discard(entry)
            self._add_retired(entry)

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

    def in_rotation(self, entry: Entry) -> bool:
        """Whether new connections may go to ``entry``."""
        if entry.removed or (entry.refused and not self._keep_refused):
            return False
        if self._probed:
            return entry.probe_ok
        backend = entry.backend
        return self._ignore_status or (backend.ready and not backend.busy)

    def stats(self) -> tuple[BackendStats, ...]:
        """Counters of the backends in the pool, then of those still draining."""
        draining = sorted(self._draining, key=lambda e: e.backend.instance_id)
        return tuple(_stats(e, self.in_rotation(e)) for e in [*self.entries(), *draining])

    def _recompute(self) -> None:
        self.rotation = [e for e in self.entries() if self.in_rotation(e)]


def _replace(backend: Backend, **changes: bool) -> Backend:
    return msgspec.structs.replace(backend, **changes)


def _stats(entry: Entry, in_rotation: bool) -> BackendStats:
    b = entry.backend
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
    )
