"""The goal state in SQLite (``<state>/fabric.db``): what must run, where, and every operation.

The controller writes here before it acts, so a fabric killed at any moment comes back to the
same deployments. One connection per controller, short transactions, WAL mode: a reader (the
CLI, a second pool's controller) never blocks a writer. Rows hold plain columns, with JSON for
the nested parts, so ``sqlite3 fabric.db 'select * from instances'`` reads as it should.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from fabric.controller.messages import OperationStatus, Slot, UpgradeMode

#: Bump when a table changes; an older database is refused rather than misread.
SCHEMA_VERSION = 1

DeploymentGoal = Literal["Running", "Suspended", "Deleting"]


class StoreError(Exception):
    """The state database cannot be used (another version's schema, a corrupt file)."""


class HostRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A local host the controller spun up (its process is made again after a restart)."""

    id: str
    pool: str
    number: int
    cores: int
    fault_domain: int
    #: Unix time it was cordoned (`fabric host cordon`: no new instance goes there); 0: it was not
    cordoned_at: float = 0.0


class UpgradeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An upgrade or configuration change walking the update domains."""

    kind: Literal["package", "config"]
    mode: UpgradeMode
    #: the generation instances move to
    generation: int
    role: str | None = None
    next_domain: int = 0
    domain_count: int = 1
    request_id: str = ""


class DeploymentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A deployment's goal: its slot, whether it runs, and the generation it runs."""

    id: str
    pool: str
    service: str
    slot: Slot
    name: str
    label: str = ""
    goal: DeploymentGoal = "Running"
    generation: int = 1
    upgrade: UpgradeRecord | None = None
    folder: str = ""


class GenerationRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A package and configuration pair: each upgrade or configuration change makes one."""

    deployment_id: str
    number: int
    #: role name -> extracted package folder (a one-role upgrade mixes two packages)
    packages: dict[str, str]
    #: the package whose definition governs deployment-wide things (domains, probes)
    main: str
    configuration: bytes
    configuration_name: str


class InstanceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A role instance: where it is placed, its local ports and domains, what it runs."""

    vm: str
    deployment_id: str
    role: str
    index: int
    host_id: str = ""
    ports: dict[str, int] = {}
    update_domain: int = 0
    fault_domain: int = 0
    generation: int = 1
    #: the uid of the VM's own account (see fabric.guest.account); 0 until it is given one
    uid: int = 0
    #: role host starts ever, and the VM boot counted last with its starts (see Instance.count_starts)
    role_starts: int = 0
    boot: str = ""
    boot_starts: int = 0


class PublicPortRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A port on the public address: an input endpoint's, or one instance input endpoint's."""

    deployment_id: str
    role: str
    endpoint: str
    #: the instance's vm for an instance input endpoint, "" for a load-balanced one
    instance: str = ""
    requested: int
    port: int


class OperationRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An asynchronous operation and its outcome."""

    request_id: str
    pool: str
    kind: str
    target: str = ""
    status: OperationStatus = "InProgress"
    http_status_code: int = 200
    error_code: str = ""
    error_message: str = ""
    description: str = ""


R = TypeVar("R", bound=msgspec.Struct)

_TABLES: dict[str, tuple[type[msgspec.Struct], tuple[str, ...]]] = {
    "hosts": (HostRecord, ("id",)),
    "deployments": (DeploymentRecord, ("id",)),
    "generations": (GenerationRecord, ("deployment_id", "number")),
    "instances": (InstanceRecord, ("vm",)),
    "public_ports": (PublicPortRecord, ("deployment_id", "role", "endpoint", "instance")),
    "operations": (OperationRecord, ("request_id",)),
}
_PLAIN = (str, int, float, bytes)


def _columns(kind: type[msgspec.Struct]) -> tuple[str, ...]:
    return kind.__struct_fields__


def _quoted(names: tuple[str, ...]) -> list[str]:
    # Field names such as "index" are SQL keywords: always quote identifiers.
    return [f'"{n}"' for n in names]


def _row(record: msgspec.Struct) -> list[Any]:
    values = []
    for name in _columns(type(record)):
        value = getattr(record, name)
        values.append(value if isinstance(value, _PLAIN) else msgspec.json.encode(value).decode())
    return values


@functools.cache
def _hints(kind: type[msgspec.Struct]) -> dict[str, Any]:
    # msgspec.structs.fields resolves the annotations each time: once per record type is enough
    return {f.name: f.type for f in msgspec.structs.fields(kind)}


def _record(kind: type[R], row: sqlite3.Row) -> R:
    data: dict[str, Any] = {}
    hints = _hints(kind)
    for name in _columns(kind):
        value = row[name]
        if isinstance(value, str) and hints[name] is not str and not _is_str_alias(hints[name]):
            value = msgspec.json.decode(value)
        data[name] = value
    return msgspec.convert(data, kind, strict=False)


def _is_str_alias(hint: Any) -> bool:
    # Literal["a", "b"] columns hold plain text; anything else non-str was written as JSON.
    args = getattr(hint, "__args__", ())
    return bool(args) and all(isinstance(a, str) for a in args)


class Store:
    """The controller's SQLite database. Methods are synchronous and each is one transaction.

    Args:
        path: the database file (created when missing).
        pool: the machine pool this controller runs; several pools may share one file.

    Raises:
        StoreError: the file is not a database of this version.
    """

    def __init__(self, path: str | Path, pool: str) -> None:
        self.path = Path(path)
        self.pool = pool
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), never implicit.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL keeps every commit across a process kill (the case we care about) and
            # skips the fsync per commit that FULL would pay.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: not a usable fabric database ({exc}); move it aside") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            self._add_columns()
            return
        if version != 0:
            raise StoreError(
                f"{self.path}: written by schema version {version}, this fabric reads {SCHEMA_VERSION}; "
                "use a new --state-dir"
            )
        with self.transaction():
            for table, (kind, key) in _TABLES.items():
                cols = ", ".join(_quoted(_columns(kind)))
                keys = ", ".join(_quoted(key))
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({keys}))")
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS instances_by_deployment ON instances (deployment_id)"
            )
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _add_columns(self) -> None:
        """Add the columns a record gained since the file was made (each with its default)."""
        for table, (kind, _) in _TABLES.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for field in msgspec.structs.fields(kind):
                if field.name not in have and field.default is not msgspec.NODEFAULT:
                    default = field.default
                    value = default if isinstance(default, _PLAIN) else msgspec.json.encode(default).decode()
                    quoted = "'" + str(value).replace("'", "''") + "'"
                    literal = repr(value) if isinstance(value, (int, float)) else quoted
                    self._db.execute(f'ALTER TABLE {table} ADD COLUMN "{field.name}" DEFAULT {literal}')

    def close(self) -> None:
        """Close the connection (committed data is already on disk)."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Group writes: all of them land, or none (on an exception)."""
        if self._db.in_transaction:
            yield self
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- generic row access --------------------------------------------------------------------

    def put(self, record: msgspec.Struct) -> None:
        """Insert or replace a record (its table follows from its type)."""
        table = _table_of(type(record))
        cols = _columns(type(record))
        marks = ", ".join("?" for _ in cols)
        with self.transaction():
            names = ", ".join(_quoted(cols))
            self._db.execute(f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})", _row(record))

    def _select(self, kind: type[R], where: str = "", args: tuple[Any, ...] = ()) -> list[R]:
        table = _table_of(kind)
        key = ", ".join(_quoted(_TABLES[table][1]))
        sql = f"SELECT * FROM {table}" + (f" WHERE {where}" if where else "") + f" ORDER BY {key}"
        return [_record(kind, row) for row in self._db.execute(sql, args)]

    # -- queries ---------------------------------------------------------------------------------

    def hosts(self) -> list[HostRecord]:
        """The pool's hosts."""
        return self._select(HostRecord, "pool = ?", (self.pool,))

    def deployments(self) -> list[DeploymentRecord]:
        """The pool's deployments."""
        return self._select(DeploymentRecord, "pool = ?", (self.pool,))

    def generations(self, deployment_id: str) -> list[GenerationRecord]:
        """A deployment's generations, oldest first."""
        return self._select(GenerationRecord, "deployment_id = ?", (deployment_id,))

    def instances(self, deployment_id: str) -> list[InstanceRecord]:
        """A deployment's instances."""
        return self._select(InstanceRecord, "deployment_id = ?", (deployment_id,))

    def vm_uids(self) -> set[int]:
        """The VM accounts given to instances, of every pool in this file (they share a machine)."""
        return {row[0] for row in self._db.execute("SELECT uid FROM instances WHERE uid != 0")}

    def public_ports(self, deployment_id: str) -> list[PublicPortRecord]:
        """A deployment's public ports."""
        return self._select(PublicPortRecord, "deployment_id = ?", (deployment_id,))

    def operation(self, request_id: str) -> OperationRecord | None:
        """One operation of this pool, or None."""
        found = self._select(OperationRecord, "request_id = ? AND pool = ?", (request_id, self.pool))
        return found[0] if found else None

    def interrupted(self) -> list[OperationRecord]:
        """The pool's operations still InProgress (before ``fail_interrupted``)."""
        return self._select(OperationRecord, "status = 'InProgress' AND pool = ?", (self.pool,))

    def other_pools_services(self) -> set[tuple[str, str]]:
        """(service, slot) pairs deployed by other pools sharing this database."""
        rows = self._db.execute("SELECT service, slot FROM deployments WHERE pool != ?", (self.pool,))
        return {(r["service"], r["slot"]) for r in rows}

    # -- deletes ----------------------------------------------------------------------------------

    def delete_host(self, host_id: str) -> None:
        """Forget a host."""
        with self.transaction():
            self._db.execute("DELETE FROM hosts WHERE id = ?", (host_id,))

    def delete_instance(self, vm: str) -> None:
        """Forget an instance and its instance input ports."""
        with self.transaction():
            self._db.execute("DELETE FROM instances WHERE vm = ?", (vm,))
            self._db.execute("DELETE FROM public_ports WHERE instance = ?", (vm,))

    def delete_generation(self, deployment_id: str, number: int) -> None:
        """Forget a generation no instance runs any more."""
        with self.transaction():
            self._db.execute(
                "DELETE FROM generations WHERE deployment_id = ? AND number = ?", (deployment_id, number)
            )

    def delete_deployment(self, deployment_id: str) -> None:
        """Forget a deployment and everything that belongs to it."""
        with self.transaction():
            for table in ("instances", "generations", "public_ports"):
                self._db.execute(f"DELETE FROM {table} WHERE deployment_id = ?", (deployment_id,))
            self._db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))

    def fail_interrupted(self, message: str) -> int:
        """Mark the pool's operations still InProgress as Failed (the fabric restarted)."""
        with self.transaction():
            cursor = self._db.execute(
                "UPDATE operations SET status = 'Failed', http_status_code = 500, "
                "error_code = 'InternalError', error_message = ? WHERE status = 'InProgress' AND pool = ?",
                (message, self.pool),
            )
        return cursor.rowcount


def _table_of(kind: type[msgspec.Struct]) -> str:
    for table, (k, _) in _TABLES.items():
        if k is kind:
            return table
    raise TypeError(f"{kind.__name__} is not stored")
