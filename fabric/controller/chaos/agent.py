"""The chaos agent: an actor in the fabric's process, child of a fabric controller, that applies
faults, keeps the lasting ones until their time is up, and undoes them all when it stops.

It is spawned on the first ChaosCommand (see plugin.answer_chaos) and reads the controller's
live state directly; it never waits on the controller while handling a message, since the
controller may be waiting for its answer. Every undo runs shielded from cancellation, so a
fault outlives neither its duration, nor an Undo, nor the fabric.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio

from actors import Actor
from fabric.controller.chaos import faults, joined, targets
from fabric.controller.chaos.messages import (
    FaultList,
    FaultRecord,
    FaultState,
    GetTargets,
    Hit,
    Inject,
    ListFaults,
    Target,
    Undo,
    WatchPoll,
    WatchStart,
    WatchStop,
    fault_duration,
    fault_kind,
)
from fabric.controller.chaos.watch import Watch

log = logging.getLogger("fabric.chaos")

#: finished fault records kept for ListFaults
HISTORY = 500
#: an undo resumes a process, heals a link, removes a file or a toxic: well under a second; one
#: stuck past this is cut and recorded as failed, so that it cannot hold the agent's stop
UNDO_TIMEOUT = 10.0


@dataclass(eq=False)
class Entry:
    """One fault the agent applied, while in force and after."""

    id: str
    kind: str
    label: str
    target: str
    instances: list[str]
    hits: list[Hit]
    at: float
    wall: str
    state: FaultState
    detail: str = ""
    until: float | None = None
    undone_at: float | None = None
    undo: faults.Undo | None = None
    #: the tasks serving the fault (its timer, its background work): cancelled when it ends
    scopes: list[anyio.CancelScope] = field(default_factory=list)
    #: set while its undo runs; a second caller waits on it instead of undoing again
    undoing: anyio.Event | None = None

    def scope(self) -> anyio.CancelScope:
        """A new cancel scope for one of the fault's tasks."""
        scope = anyio.CancelScope()
        self.scopes.append(scope)
        return scope

    def record(self) -> FaultRecord:
        """The FaultRecord view."""
        return FaultRecord(
            id=self.id,
            kind=self.kind,
            label=self.label,
            target=self.target,
            instances=list(self.instances),
            hits=list(self.hits),
            at=self.at,
            wall=self.wall,
            state=self.state,
            until=self.until,
            undone_at=self.undone_at,
            detail=self.detail,
        )


class ChaosAgent(Actor):
    """Applies and undoes faults for one fabric controller (its parent, in this process)."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.active: dict[str, Entry] = {}
        self.history: deque[Entry] = deque(maxlen=HISTORY)
        self.watches: dict[str, Watch] = {}
        self._fault_ids = itertools.count(1)
        self._watch_ids = itertools.count(1)

    async def on_start(self) -> None:
        """Take the controller's live state."""
        self.world = faults.World(self.controller.state, self.controller.ref)

    async def receive(self, message: Any) -> Any:
        """Inject, Undo, ListFaults, GetTargets and the watch requests."""
        state = self.world.state
        match message:
            case Inject():
                return await self._inject(message)
            case Undo(id=None):
                return FaultList(faults=[await self._undo(e) for e in list(self.active.values())])
            case Undo(id=fault_id):
                entry = self.active.get(str(fault_id))
                if entry is None:
                    known = next((e for e in self.history if e.id == fault_id), None)
                    if known is not None:
                        return known.record()
                    raise targets.refuse(
                        f"no fault {fault_id!r}; `fabric chaos faults` lists them", "ResourceNotFound", 404
                    )
                return await self._undo(entry)
            case ListFaults():
                finished = sorted(self.history, key=lambda e: e.at, reverse=True)
                return FaultList(faults=[e.record() for e in [*self.active.values(), *finished]])
            case GetTargets(service=service, slot=slot):
                dep = targets.deployment(state, service, slot)
                procs = await joined.joined_processes(state, await self.world.scan())
                return targets.target_map(state, dep, procs)
            case WatchStart():
                dep = targets.deployment(state, message.service, message.slot)
                watch = Watch(f"w{next(self._watch_ids)}", dep.service, dep.slot, max(1.0, message.lease))
                watch.renew()
                watch.look(state)
                self.watches[watch.id] = watch
                self.start_soon(self._watch, watch)
                return watch.batch(0)
            case WatchPoll(id=watch_id, since=since):
                watch = self._get_watch(watch_id)
                watch.renew()
                return watch.batch(since)
            case WatchStop(id=watch_id, since=since):
                watch = self._get_watch(watch_id)
                watch.look(state)
                watch.scope.cancel()
                watch.active = False
                self.watches.pop(watch_id, None)
                return watch.batch(since)
        return await super().receive(message)

    async def on_stop(self) -> None:
        """Undo every fault still in force: nothing chaos did outlives the fabric."""
        entries = list(self.active.values())
        # Shielded, so that a cancelled stop still undoes them all; each undo is bounded.
        with anyio.move_on_after(len(entries) * UNDO_TIMEOUT, shield=True):
            for entry in entries:
                await self._undo(entry)

    # -- faults ------------------------------------------------------------------------------------

    async def _inject(self, message: Inject) -> FaultRecord:
        fault = message.fault
        applied = await faults.apply(self.world, fault)
        # The moment of the damage: finding the target (a process scan) is not part of it.
        at = applied.at if applied.at is not None else anyio.current_time()
        wall = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        kind = fault_kind(fault)
        entry = Entry(
            id=f"f{next(self._fault_ids)}",
            kind=kind,
            label=message.label or f"{kind} {fault.target.label()}",
            target=fault.target.label(),
            instances=applied.instances,
            hits=applied.hits,
            at=at,
            wall=wall,
            state="active" if applied.undo is not None else "done",
            detail=applied.detail,
            undo=applied.undo,
        )
        log.info("chaos %s: %s: %s", entry.id, entry.label, entry.detail)
        self.world.state.events.faults[kind] += 1
        self._record(entry, fault.target, f"fault {entry.id} {entry.label}: {entry.detail}")
        if applied.undo is None:
            self.history.append(entry)
            return entry.record()
        self.active[entry.id] = entry
        duration = fault_duration(fault)
        if duration is not None:
            entry.until = at + duration
            self.start_soon(self._expire, entry, duration)
        if applied.background is not None:
            self.start_soon(self._background, entry, applied.background)
        return entry.record()

    async def _expire(self, entry: Entry, duration: float) -> None:
        with entry.scope():
            await anyio.sleep(duration)
        if entry.id in self.active:
            await self._undo(entry)

    async def _background(self, entry: Entry, work: faults.Background) -> None:
        def progress(detail: str) -> None:
            entry.detail = detail

        with entry.scope():
            try:
                await work(progress)
            except Exception as exc:  # a storm that breaks ends as failed, not the agent
                log.exception("chaos %s: failed", entry.id)
                entry.detail = f"{entry.detail}; failed: {exc}"
            if self.active.pop(entry.id, None) is not None:
                entry.state = "done"
                entry.undone_at = anyio.current_time()
                self.history.append(entry)

    async def _undo(self, entry: Entry) -> FaultRecord:
        """End a lasting fault (once; later calls answer its record, a call during the undo
        once it is done). The fault stays listed as active until its undo has finished: a
        hang is not shown ended while its process is still stopped."""
        if entry.id not in self.active:
            return entry.record()
        if entry.undoing is not None:
            await entry.undoing.wait()
            return entry.record()
        entry.undoing = anyio.Event()
        for scope in entry.scopes:
            scope.cancel()
        with anyio.move_on_after(UNDO_TIMEOUT, shield=True) as undoing:
            try:
                assert entry.undo is not None
                entry.detail = f"{entry.detail}; undone: {await entry.undo()}"
                entry.state = "undone"
            except Exception as exc:  # an undo must never take the agent down with it
                log.exception("chaos %s: undo failed", entry.id)
                entry.detail = f"{entry.detail}; undo failed: {exc}"
                entry.state = "failed"
        if undoing.cancel_called:
            log.error("chaos %s: the undo did not finish within %g s", entry.id, UNDO_TIMEOUT)
            entry.detail = f"{entry.detail}; undo cut after {UNDO_TIMEOUT:g} s"
            entry.state = "failed"
        self.active.pop(entry.id, None)
        entry.undone_at = anyio.current_time()
        self.history.append(entry)
        entry.undoing.set()
        log.info("chaos %s: %s", entry.id, entry.detail)
        self._record(entry, None, f"fault {entry.id} {entry.label} ended: {entry.state}")
        return entry.record()

    def _record(self, entry: Entry, target: Target | None, message: str) -> None:
        """Put the fault on the fabric's timeline, under its deployment and instance when it has one."""
        state = self.world.state
        inst = dep = None
        for d, i in state.instances():
            hit = i.id in entry.instances or i.vm in entry.instances
            if hit and (target is None or (target.service in (None, d.service) and target.slot == d.slot)):
                dep, inst = d, i
                break
        if len(entry.instances) != 1:
            inst = None
        state.events.record(
            "fault", message, dep=dep, inst=inst, fault=entry.kind, fault_id=entry.id, status=entry.state
        )

    # -- watches -----------------------------------------------------------------------------------

    def _get_watch(self, watch_id: str) -> Watch:
        watch = self.watches.get(watch_id)
        if watch is None:
            raise targets.refuse(
                f"no watch {watch_id!r} (it ended: watches end when not polled)", "ResourceNotFound", 404
            )
        return watch

    async def _watch(self, watch: Watch) -> None:
        await watch.run(self.world.state)
        # A lapsed watch is kept one more lease for a last poll, then forgotten.
        await anyio.sleep(watch.lease)
        if self.watches.get(watch.id) is watch:
            del self.watches[watch.id]
