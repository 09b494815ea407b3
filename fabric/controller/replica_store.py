"""The goal store of a controller on PostgreSQL: fenced writes, and patience when the database is away.

The controller's :class:`~fabric.controller.pg_store.PostgresStore` (a replica's, fenced by its
lease, or a single fabric's) is wrapped in :class:`ReplicaStore`, which decides what a failed
call means:

- ``Fenced`` (another replica leads now): ``on_fenced`` is called at once (the replica stops
  acting, which cancels the controller), and nothing is written: a request gets 503, background
  work waits to be cancelled.
- ``StoreUnavailable`` (the database is down or restarting): the controller stops changing the
  goal state and keeps what runs. Background work (an operation's steps, healing, recovery)
  waits and retries with backoff until the database answers; a request (a command in the
  controller's mailbox) is refused at once with 503 ServiceUnavailable, nothing changed, so a
  client retries instead of waiting behind an outage.

Which of the two a call gets follows from the task it runs in (:func:`fail_fast` marks the
controller's mailbox; everything else is patient). A retried transaction is sent again whole:
its statements are upserts and deletes, so a write whose commit was in doubt (it may have
landed) lands once either way.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import msgspec

from fabric.controller.goal_store import GoalStore, Writes
from fabric.controller.messages import ControllerError
from fabric.controller.pg_store import Fenced, StoreUnavailable
from fabric.controller.store import (
    DeploymentRecord,
    GenerationRecord,
    HostRecord,
    InstanceRecord,
    OperationRecord,
    PublicPortRecord,
)

log = logging.getLogger("fabric.controller.store")

T = TypeVar("T")

#: a patient call waits this long after its first failure, doubling up to MAX_BACKOFF
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: what a request refused for an outage tells a client to wait (seconds, Retry-After)
RETRY_AFTER = 2

_fail_fast: contextvars.ContextVar[bool] = contextvars.ContextVar("fabric_store_fail_fast", default=False)


class fail_fast:  # used as a function: ``with fail_fast():``
    """Calls made inside (this task) are refused at once when the database is away.

    A class, not a @contextmanager: the controller enters it for every message it handles,
    and a generator-based one cost as much as handling a quiet status report."""

    __slots__ = ("_on", "_token")

    def __init__(self, on: bool = True) -> None:
        self._on = on

    def __enter__(self) -> None:
        self._token = _fail_fast.set(self._on)

    def __exit__(self, *exc: object) -> None:
        _fail_fast.reset(self._token)


def unavailable(why: str) -> ControllerError:
    """The 503 a request gets while the goal state cannot be changed."""
    return ControllerError(
        "ServiceUnavailable", f"the goal state cannot be changed now ({why}); nothing changed, try again", 503
    )


class _Recorded(Writes):
    """A transaction's writes, kept to be sent (again) whole."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def put(self, record: msgspec.Struct) -> None:
        self.calls.append(("put", (record,)))

    def delete_host(self, host_id: str) -> None:
        self.calls.append(("delete_host", (host_id,)))

    def delete_instance(self, vm: str) -> None:
        self.calls.append(("delete_instance", (vm,)))

    def delete_generation(self, deployment_id: str, number: int) -> None:
        self.calls.append(("delete_generation", (deployment_id, number)))

    def delete_deployment(self, deployment_id: str) -> None:
        self.calls.append(("delete_deployment", (deployment_id,)))


class ReplicaStore(GoalStore):
    """``inner`` (a fenced PostgreSQL store) with the outage and fencing rules above.

    Args:
        inner: the store.
        on_fenced: called with the reason when a write is refused by the fence.
    """

    def __init__(self, inner: GoalStore, on_fenced: Callable[[str], None]) -> None:
        self.inner = inner
        self.pool = inner.pool
        self.where = inner.where
        self.on_fenced = on_fenced
        #: calls waiting for the database now (for metrics and tests)
        self.waiting = 0

    async def _call(self, what: Callable[[], Awaitable[T]]) -> T:
        delay = FIRST_BACKOFF
        while True:
            try:
                return await what()
            except Fenced as exc:
                self.on_fenced(str(exc))
                if _fail_fast.get():
                    raise unavailable("this replica no longer leads") from None
                await anyio.sleep_forever()  # background work: stopped with the term, at once
                raise  # not reached
            except StoreUnavailable as exc:
                if _fail_fast.get():
                    raise unavailable(str(exc)) from None
                level = logging.DEBUG if exc.reported else logging.WARNING  # pg_outage told it
                log.log(level, "goal state: %s; retrying in %.1f s", exc, delay)
            self.waiting += 1
            try:
                await anyio.sleep(delay)
            finally:
                self.waiting -= 1
            delay = min(MAX_BACKOFF, delay * 2)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Writes]:
        writes = _Recorded()
        yield writes
        if writes.calls:
            await self._call(lambda: self._send(writes.calls))

    async def _send(self, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        async with self.inner.transaction() as tx:
            for name, args in calls:
                getattr(tx, name)(*args)

    async def fail_interrupted(self, message: str) -> int:
        return await self._call(lambda: self.inner.fail_interrupted(message))

    async def interrupted(self) -> list[OperationRecord]:
        return await self._call(self.inner.interrupted)

    async def hosts(self) -> list[HostRecord]:
        return await self._call(self.inner.hosts)

    async def deployments(self) -> list[DeploymentRecord]:
        return await self._call(self.inner.deployments)

    async def generations(self, deployment_id: str) -> list[GenerationRecord]:
        return await self._call(lambda: self.inner.generations(deployment_id))

    async def instances(self, deployment_id: str) -> list[InstanceRecord]:
        return await self._call(lambda: self.inner.instances(deployment_id))

    async def vm_uids(self) -> set[int]:
        return await self._call(self.inner.vm_uids)

    async def public_ports(self, deployment_id: str) -> list[PublicPortRecord]:
        return await self._call(lambda: self.inner.public_ports(deployment_id))

    async def operation(self, request_id: str) -> OperationRecord | None:
        return await self._call(lambda: self.inner.operation(request_id))

    async def other_pools_services(self) -> set[tuple[str, str]]:
        return await self._call(self.inner.other_pools_services)

    async def aclose(self) -> None:
        await self.inner.aclose()


__all__ = ["ReplicaStore", "fail_fast", "unavailable"]
