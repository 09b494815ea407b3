"""RDFE's own records: subscriptions and hosted services, kept in ``<state>/rdfe.json``.

Deployments are the controllers' (in their SQLite goal state); RDFE keeps only what the
Service Management API puts above them: subscriptions, hosted services with their labels and
location, the pool a hosted service was placed in, and which package each deployment runs
(to check a new configuration against its definition). The file is rewritten atomically after
every change, so a fabric killed at any moment comes back with the last committed state.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import uuid
from pathlib import Path

import msgspec

STORE_FILE = "rdfe.json"


class StoreError(Exception):
    """``<state>/rdfe.json`` cannot be read; the message says which file and why."""


class HostedServiceRecord(msgspec.Struct, kw_only=True):
    """One hosted service."""

    name: str
    label: str = ""
    description: str = ""
    location: str | None = None
    affinity_group: str | None = None
    created: str = ""
    #: the machine pool its deployments live in, chosen by FFE at the first deployment
    pool: str | None = None
    #: deployment name -> the staged .cspkg it runs
    packages: dict[str, str] = {}


class SubscriptionRecord(msgspec.Struct, kw_only=True):
    """One subscription and its hosted services (keyed by lower-case name)."""

    id: str
    name: str
    hosted_services: dict[str, HostedServiceRecord] = {}


class _State(msgspec.Struct, kw_only=True):
    subscriptions: dict[str, SubscriptionRecord] = {}


class Store:
    """The records, in memory, with ``save()`` to commit them to disk.

    Callers mutate records and then call ``save()`` (RDFE does both under one lock, so two
    requests never interleave a check and a change).
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / STORE_FILE
        self._state = self._load()
        if not self._state.subscriptions:
            # Azure handed every account a subscription; a fresh fabric gets one too.
            sub = SubscriptionRecord(id=str(uuid.uuid4()), name="Local subscription")
            self._state.subscriptions[sub.id] = sub
            self.save()

    def _load(self) -> _State:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return _State()
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc.strerror}") from None
        try:
            return msgspec.json.decode(data, type=_State)
        except msgspec.DecodeError as exc:
            raise StoreError(f"{self.path}: damaged ({exc}); restore it or delete it to start over") from None

    @property
    def subscriptions(self) -> list[SubscriptionRecord]:
        """Every subscription, oldest first."""
        return list(self._state.subscriptions.values())

    def subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        """The subscription with this id (ids compare case-insensitively, as GUIDs do)."""
        found = self._state.subscriptions.get(subscription_id)
        if found is not None:
            return found
        wanted = subscription_id.lower()
        return next((s for s in self._state.subscriptions.values() if s.id.lower() == wanted), None)

    def affinity_pool(self, group: str) -> str | None:
        """The pool a hosted service of this affinity group already lives in, if any."""
        for sub in self._state.subscriptions.values():
            for hosted in sub.hosted_services.values():
                if hosted.affinity_group == group and hosted.pool is not None:
                    return hosted.pool
        return None

    def save(self) -> None:
        """Commit every record to disk atomically (write a temporary file, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = msgspec.json.format(msgspec.json.encode(self._state), indent=1)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def now_text() -> str:
    """The current UTC time as the Service Management API wrote dates."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
