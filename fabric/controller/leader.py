"""Leader election for controller replicas: a lease row with a fencing epoch, in PostgreSQL.

One row of ``fabric_leases`` per lease: who holds it, its epoch, and when it expires, every time
taken from the database's own ``now()`` (the replicas' clocks never meet). As Kubernetes'
Lease-based election: a replica takes the lease when it has expired (the epoch goes up by one),
the holder renews it every ``renew_interval`` for ``duration`` more, and a holder that has not
renewed for ``renew_deadline`` (< ``duration``) stops acting, so it has stopped before anyone
else can take over (Patroni's demotion). The deadline runs on this process's monotonic clock
from the moment a successful renewal was *sent*, so it ends before the lease the database
granted, whatever the network or the database did meanwhile.

Acting as leader means writing with the lease as a fence (:class:`~fabric.controller.pg_store.Fence`):
each write transaction checks the row (see ``check_fence``), so a leader paused past its lease
and resumed cannot write even before it notices it lost (Temporal's ``range_id``). No advisory
locks: they go silently with a session and carry no fencing token.

Use::

    elector = Elector(db, "replica-a", duration=15, renew_interval=2, renew_deadline=10)
    store = PostgresStore(db, pool, fence=elector.fence)
    async with anyio.create_task_group() as tg:
        await tg.start(elector.run)
        async with elector.leading() as term:   # waits to lead; the body is cancelled on loss
            ...                                 # act: term.epoch is the fencing epoch
        # here: term.lost says why leadership ended (None: the body finished)
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from fabric.controller.pg_store import Database, Fence, StoreUnavailable, migrate
from fabric.settings import Settings

log = logging.getLogger("fabric.controller.leader")

_ACQUIRE = """
INSERT INTO fabric_leases AS l (name, holder, epoch, acquired_at, renewed_at, expires_at)
VALUES (%(lease)s, %(holder)s, 1, now(), now(), now() + make_interval(secs => %(secs)s))
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = l.epoch + 1,
    acquired_at = now(), renewed_at = now(), expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= now()
RETURNING epoch
"""

_RENEW = """
UPDATE fabric_leases SET renewed_at = now(), expires_at = now() + make_interval(secs => %(secs)s)
WHERE name = %(lease)s AND holder = %(holder)s AND epoch = %(epoch)s AND expires_at > now()
RETURNING epoch
"""

_RELEASE = """
UPDATE fabric_leases SET expires_at = now()
WHERE name = %(lease)s AND holder = %(holder)s AND epoch = %(epoch)s AND expires_at > now()
"""


class Term:
    """One period of leadership: its epoch, and why it ended (None while it lasts)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.lost: str | None = None
        self.ended = anyio.Event()
        #: when it ended (anyio.current_time())
        self.ended_at: float | None = None
        self._scopes: list[anyio.CancelScope] = []

    def _end(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            self.ended_at = anyio.current_time()
        for scope in self._scopes:
            scope.cancel()
        self.ended.set()


class Elector:
    """Campaign for a lease and hold it while this process can renew it.

    Args:
        db: the database (the elector's own pool: renewals never queue behind store work).
        holder: this replica's name (unique among replicas).
        lease: the lease's name (one per thing to lead).
        duration: a lease lasts this long past its last renewal (database time).
        renew_interval: the holder renews this often; a follower tries to take over this often.
        renew_deadline: the holder stops acting this long after its last successful renewal
            was sent (must be < duration).
        on_change: called with (epoch, None) on taking the lease, (epoch, why) on losing it.
    """

    def __init__(
        self,
        db: Database,
        holder: str,
        *,
        lease: str = "controller",
        duration: float = 15.0,
        renew_interval: float = 2.0,
        renew_deadline: float = 10.0,
        on_change: Callable[[int, str | None], None] | None = None,
    ) -> None:
        if not renew_interval < renew_deadline < duration:
            raise ValueError("lease times must satisfy renew_interval < renew_deadline < duration")
        self.db = db
        self.holder = holder
        self.lease = lease
        self.duration = duration
        self.renew_interval = renew_interval
        self.renew_deadline = renew_deadline
        self.on_change = on_change or (lambda epoch, why: None)
        #: the current term while leading, else None
        self.term: Term | None = None
        self._last_epoch = 0
        self._changed = anyio.Event()
        #: when the last successful acquisition or renewal was sent (anyio.current_time())
        self.renewed_at: float | None = None
        #: acting is allowed until then (time.monotonic(), readable from any thread; see acting)
        self._acting_until = 0.0
        #: renewals run in threads that may be abandoned when the deadline passes (a renewal
        #: that lands late only extends a lease nobody acts on)
        self._limiter = anyio.CapacityLimiter(4)

    @classmethod
    def from_settings(cls, db: Database, holder: str, settings: Settings, **kwargs: Any) -> Elector:
        """An elector with the lease times of ``settings``."""
        return cls(
            db,
            holder,
            duration=settings.leader_lease_duration,
            renew_interval=settings.leader_renew_interval,
            renew_deadline=settings.leader_renew_deadline,
            **kwargs,
        )

    def fence(self) -> Fence:
        """The fence for a write: the current term's epoch, or one no lease has (0) when not
        leading, so a write made after losing the lease is refused by the database."""
        epoch = self.term.epoch if self.term is not None else 0
        return Fence(self.lease, self.holder, epoch)

    def acting(self) -> bool:
        """Leading, by this process's monotonic clock right now (safe from any thread): the
        last successful renewal was sent less than renew_deadline ago and the term was not
        resigned. Unlike is_leader, false the instant a pause took it past the deadline, before
        the event loop has run again (fabric.controller.shared_folder)."""
        return time.monotonic() < self._acting_until

    @property
    def is_leader(self) -> bool:
        """Leading now (the lease was renewed within the deadline)."""
        return self.term is not None

    async def _sql(self, sql: str, **params: Any) -> int | None:
        def call(conn: Any) -> int | None:
            row = conn.execute(sql, params).fetchone() if "RETURNING" in sql else conn.execute(sql, params)
            return None if row is None or not isinstance(row, dict) else int(row["epoch"])

        # abandon_on_cancel: a deadline must never wait on a hung connection
        return await anyio.to_thread.run_sync(
            partial(self.db._call, call, transaction=False), abandon_on_cancel=True, limiter=self._limiter
        )

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Campaign and lead until cancelled (then release the lease, if held)."""
        task_status.started()
        while True:
            try:
                await self.db.run(migrate, write=True)
                break
            except StoreUnavailable as exc:
                level = logging.DEBUG if exc.reported else logging.WARNING  # pg_outage told it
                log.log(level, "%s: waiting for the database: %s", self.holder, exc)
                await anyio.sleep(self.renew_interval)
        while True:
            sent, sent_mono = anyio.current_time(), time.monotonic()
            try:
                epoch = await self._sql(_ACQUIRE, lease=self.lease, holder=self.holder, secs=self.duration)
            except StoreUnavailable as exc:
                log.debug("%s: campaign failed: %s", self.holder, exc)
                epoch = None
            if epoch is None:
                await anyio.sleep_until(sent + self.renew_interval)
                continue
            await self._lead(epoch, sent, sent_mono)
            await anyio.sleep(self.renew_interval)  # a replica that just stopped leading lets others try

    async def _lead(self, epoch: int, sent: float, sent_mono: float) -> None:
        term = self.term = Term(epoch)
        self.renewed_at = sent
        self._acting_until = sent_mono + self.renew_deadline
        self._last_epoch = epoch
        log.warning("%s leads %s (epoch %d)", self.holder, self.lease, epoch)
        self._notify()
        self.on_change(epoch, None)
        why = f"no renewal for {self.renew_deadline:g} s"
        try:
            with anyio.move_on_at(sent + self.renew_deadline) as deadline:
                term._scopes.append(deadline)  # resign() ends the renewals too
                while True:
                    await anyio.sleep_until(sent + self.renew_interval)
                    attempt, attempt_mono = anyio.current_time(), time.monotonic()
                    try:
                        renewed = await self._sql(
                            _RENEW, lease=self.lease, holder=self.holder, epoch=epoch, secs=self.duration
                        )
                    except StoreUnavailable as exc:
                        level = logging.DEBUG if exc.reported else logging.WARNING  # pg_outage told it
                        log.log(level, "%s: renewal failed: %s", self.holder, exc)
                        sent = attempt  # try again after renew_interval (deadline unchanged)
                        continue
                    if renewed is None:
                        why = "the lease was taken over"
                        break
                    sent = self.renewed_at = attempt
                    self._acting_until = attempt_mono + self.renew_deadline
                    deadline.deadline = sent + self.renew_deadline
        except BaseException:
            self._demote(term, "the elector stopped")
            with anyio.move_on_after(2.0, shield=True):
                with suppress(StoreUnavailable):
                    await self._sql(_RELEASE, lease=self.lease, holder=self.holder, epoch=epoch)
            raise
        if term.lost is not None:  # resigned: let the lease go now rather than at its expiry
            with anyio.move_on_after(2.0, shield=True), suppress(StoreUnavailable):
                await self._sql(_RELEASE, lease=self.lease, holder=self.holder, epoch=epoch)
        self._demote(term, why)

    def resign(self, why: str) -> None:
        """Stop leading now (a write found the lease lost): the term ends, renewals stop, and
        the lease is released if it is still this replica's; campaigning goes on."""
        if self.term is not None:
            self._demote(self.term, why)

    def _demote(self, term: Term, why: str) -> None:
        if self.term is term:
            self.term = None
            self._acting_until = 0.0
            log.warning("%s stops leading %s (epoch %d): %s", self.holder, self.lease, term.epoch, why)
            term._end(why)
            self._notify()
            self.on_change(term.epoch, why)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_leading(self) -> Term:
        """Wait until this replica leads; returns the term."""
        while self.term is None:
            await self._changed.wait()
        return self.term

    @asynccontextmanager
    async def leading(self) -> AsyncIterator[Term]:
        """Wait to lead, then run the body as leader: it is cancelled when the term ends (the
        lease lost or not renewed in time), before the lease can expire."""
        term = await self.wait_leading()
        scope = anyio.CancelScope()
        term._scopes.append(scope)
        if term.lost is not None:
            scope.cancel()
        with scope:
            yield term


__all__ = ["Elector", "Term"]
