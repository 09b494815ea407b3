"""The goal-state store interface, and where a store lives (``--store``).

Two implementations answer it: :class:`SqliteGoalStore` (``<state>/fabric.db``, the embedded
default, today's :class:`~fabric.controller.store.Store` run inline: its calls are measured in
tens of microseconds) and :class:`~fabric.controller.pg_store.PostgresStore` (``--store
postgresql://USER@HOST/DB``: psycopg's synchronous API in worker threads, so the controller's
event loop never waits on the network).

Every method is async, so either can sit behind the controller. Writes that must land together
go through a transaction::

    async with store.transaction() as tx:
        tx.put(deployment_record)
        tx.delete_instance(vm)

The block's writes are applied as one database transaction when it ends (all of them or none);
a caller cancelled meanwhile does not abandon a write half-way (PostgreSQL's commit is shielded,
with a deadline).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from fabric.controller.store import (
    DeploymentRecord,
    GenerationRecord,
    HostRecord,
    InstanceRecord,
    OperationRecord,
    PublicPortRecord,
    Store,
    StoreError,
)


class StoreUrlError(ValueError):
    """A ``--store`` value that is neither a folder's SQLite default nor a PostgreSQL URL."""


def check_store_url(url: str) -> str:
    """Validate a ``--store`` PostgreSQL URL; returns it unchanged.

    Raises:
        StoreUrlError: not ``postgresql://[USER@]HOST[:PORT]/DB``, or a password in it (one line,
            saying what to change).
    """
    parts = urlsplit(url)
    if parts.password is not None or "password" in parse_qs(parts.query):
        # A command line is readable by every process of the machine (ps), the VMs' roles too;
        # checked first, so that no message below quotes the password.
        raise StoreUrlError(
            "a password in the URL of --store would be readable by every process of this machine "
            "(ps): give it in PGPASSWORD or ~/.pgpass instead"
        )
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreUrlError(f"--store {url!r}: expected postgresql://USER@HOST/DB")
    try:
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        raise StoreUrlError(f"--store {url!r}: the port is not a number") from None
    if not parts.hostname and "host=" not in parts.query:
        raise StoreUrlError(f"--store {url!r}: no host (postgresql://USER@HOST/DB)")
    if not parts.path.strip("/"):
        raise StoreUrlError(f"--store {url!r}: no database name (postgresql://USER@HOST/DB)")
    return url


class Writes(abc.ABC):
    """The writes of one transaction (applied when its ``async with`` block ends)."""

    @abc.abstractmethod
    def put(self, record: msgspec.Struct) -> None:
        """Insert or replace a record (its table follows from its type)."""

    @abc.abstractmethod
    def delete_host(self, host_id: str) -> None:
        """Forget a host."""

    @abc.abstractmethod
    def delete_instance(self, vm: str) -> None:
        """Forget an instance and its instance input ports."""

    @abc.abstractmethod
    def delete_generation(self, deployment_id: str, number: int) -> None:
        """Forget a generation no instance runs any more."""

    @abc.abstractmethod
    def delete_deployment(self, deployment_id: str) -> None:
        """Forget a deployment and everything that belongs to it."""


class GoalStore(abc.ABC):
    """What the controller needs of a goal-state store, one pool's view of it.

    Reads and single writes are awaitables; ``transaction()`` groups writes. Raises
    :class:`~fabric.controller.store.StoreError` (or a subclass, such as ``Fenced``) when the
    database cannot take a write: nothing of that write landed.
    """

    pool: str
    #: where the store is, for logs (a path, or a URL without its password)
    where: str

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Writes]:
        """``async with store.transaction() as tx``: tx's writes land together, or none do."""

    async def put(self, record: msgspec.Struct) -> None:
        """Insert or replace a record."""
        async with self.transaction() as tx:
            tx.put(record)

    async def delete_host(self, host_id: str) -> None:
        """Forget a host."""
        async with self.transaction() as tx:
            tx.delete_host(host_id)

    async def delete_instance(self, vm: str) -> None:
        """Forget an instance and its instance input ports."""
        async with self.transaction() as tx:
            tx.delete_instance(vm)

    async def delete_generation(self, deployment_id: str, number: int) -> None:
        """Forget a generation."""
        async with self.transaction() as tx:
            tx.delete_generation(deployment_id, number)

    async def delete_deployment(self, deployment_id: str) -> None:
        """Forget a deployment and everything that belongs to it."""
        async with self.transaction() as tx:
            tx.delete_deployment(deployment_id)

    @abc.abstractmethod
    async def fail_interrupted(self, message: str) -> int:
        """Mark the pool's operations still InProgress as Failed; returns how many."""

    @abc.abstractmethod
    async def interrupted(self) -> list[OperationRecord]:
        """The pool's operations still InProgress (a new leader resumes some of them)."""

    @abc.abstractmethod
    async def hosts(self) -> list[HostRecord]:
        """The pool's hosts."""

    @abc.abstractmethod
    async def deployments(self) -> list[DeploymentRecord]:
        """The pool's deployments."""

    @abc.abstractmethod
    async def generations(self, deployment_id: str) -> list[GenerationRecord]:
        """A deployment's generations, oldest first."""

    @abc.abstractmethod
    async def instances(self, deployment_id: str) -> list[InstanceRecord]:
        """A deployment's instances."""

    @abc.abstractmethod
    async def vm_uids(self) -> set[int]:
        """The VM accounts given to instances of every pool."""

    @abc.abstractmethod
    async def public_ports(self, deployment_id: str) -> list[PublicPortRecord]:
        """A deployment's public ports."""

    @abc.abstractmethod
    async def operation(self, request_id: str) -> OperationRecord | None:
        """One operation of this pool, or None."""

    @abc.abstractmethod
    async def other_pools_services(self) -> set[tuple[str, str]]:
        """(service, slot) pairs deployed by other pools sharing this database."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the store (committed data is already durable)."""


class _SqliteWrites(Writes):
    """Writes straight into the open SQLite transaction (inline: each is tens of microseconds)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def put(self, record: msgspec.Struct) -> None:
        self._store.put(record)

    def delete_host(self, host_id: str) -> None:
        self._store.delete_host(host_id)

    def delete_instance(self, vm: str) -> None:
        self._store.delete_instance(vm)

    def delete_generation(self, deployment_id: str, number: int) -> None:
        self._store.delete_generation(deployment_id, number)

    def delete_deployment(self, deployment_id: str) -> None:
        self._store.delete_deployment(deployment_id)


class SqliteGoalStore(GoalStore):
    """The embedded store: :class:`~fabric.controller.store.Store` behind the async interface.

    Each method runs inline, without a checkpoint (a local SQLite transaction in WAL mode takes
    tens of microseconds; a worker thread hop would cost more than the write), so the behaviour
    of ``fabric run`` and ``fabric serve`` is exactly that of the synchronous store.

    Args:
        path: the database file (created when missing).
        pool: the machine pool.

    Raises:
        StoreError: the file is not a database of this version.
    """

    def __init__(self, path: str | Path, pool: str) -> None:
        self.sync = Store(path, pool)
        self.pool = pool
        self.where = str(self.sync.path)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Writes]:
        with self.sync.transaction():
            yield _SqliteWrites(self.sync)

    async def fail_interrupted(self, message: str) -> int:
        return self.sync.fail_interrupted(message)

    async def interrupted(self) -> list[OperationRecord]:
        return self.sync.interrupted()

    async def hosts(self) -> list[HostRecord]:
        return self.sync.hosts()

    async def deployments(self) -> list[DeploymentRecord]:
        return self.sync.deployments()

    async def generations(self, deployment_id: str) -> list[GenerationRecord]:
        return self.sync.generations(deployment_id)

    async def instances(self, deployment_id: str) -> list[InstanceRecord]:
        return self.sync.instances(deployment_id)

    async def vm_uids(self) -> set[int]:
        return self.sync.vm_uids()

    async def public_ports(self, deployment_id: str) -> list[PublicPortRecord]:
        return self.sync.public_ports(deployment_id)

    async def operation(self, request_id: str) -> OperationRecord | None:
        return self.sync.operation(request_id)

    async def other_pools_services(self) -> set[tuple[str, str]]:
        return self.sync.other_pools_services()

    async def aclose(self) -> None:
        self.sync.close()


async def open_goal_store(
    store_url: str | None,
    state_dir: Path,
    pool: str,
    *,
    database: str = "fabric.db",
    fence: Callable[[], Any] | None = None,
    on_fenced: Callable[[str], None] | None = None,
) -> GoalStore:
    """The store ``--store`` names: PostgreSQL for a ``postgresql://`` URL, else SQLite in the
    state folder. Close it with ``aclose()``. PostgreSQL's store is a
    :class:`~fabric.controller.replica_store.ReplicaStore` (a database outage refuses requests
    with 503 and holds background work until it is back); with ``fence`` (a replica's lease)
    its writes are fenced too.

    Raises:
        StoreError: the database cannot be opened, or holds a schema this fabric does not know.
        StoreUrlError: a malformed URL.
    """
    if store_url:
        from fabric.controller.pg_store import PostgresStore  # psycopg only when it is used
        from fabric.controller.replica_store import ReplicaStore

        store = await PostgresStore.open(check_store_url(store_url), pool, fence=fence)
        # the database may go away under a running fabric: requests get 503, background work waits
        return ReplicaStore(store, on_fenced or (lambda why: None))
    import anyio.to_thread

    return await anyio.to_thread.run_sync(SqliteGoalStore, state_dir / database, pool)


__all__ = ["GoalStore", "SqliteGoalStore", "StoreError", "StoreUrlError", "Writes", "open_goal_store"]
