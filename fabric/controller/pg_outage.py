"""A database's outages, one line per change ("database unreachable: ...; retrying", then
"database back"), instead of psycopg_pool's line per connection attempt (each several lines
long with libpq's hint) and every caller's own line per retry."""

from __future__ import annotations

import logging
import threading
import weakref

log = logging.getLogger("fabric.controller.store")

#: psycopg_pool's messages for a connection that failed or broke: an outage, told by Outage
_CONNECT_FAILED = "error connecting in %r: %s"
_POOL_NOISE = frozenset(
    {
        _CONNECT_FAILED,
        "reconnection attempt in pool %r failed after %s sec",
        "discarding broken connection: %s",
        "discarding closed connection: %s",
        "error resetting connection: %s",
    }
)

_pools: weakref.WeakValueDictionary[str, Outage] = weakref.WeakValueDictionary()
_installed = threading.Lock()
_filter: _PoolFilter | None = None


def first_line(exc: BaseException) -> str:
    """An error's type and the first line of its text (libpq adds hint lines)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class Outage:
    """Whether one database answers, logged once per change (from any thread)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.down = False
        self._lock = threading.Lock()

    def failed(self, why: str) -> None:
        """A connection or a call failed: the first failure of an outage is logged."""
        with self._lock:
            if self.down:
                return
            self.down = True
        log.warning("database unreachable: %s: %s; retrying", self.where, why)

    def answered(self) -> None:
        """A call went through: the end of an outage is logged."""
        if not self.down:
            return
        with self._lock:
            if not self.down:
                return
            self.down = False
        log.warning("database back: %s", self.where)


class _PoolFilter(logging.Filter):
    """Folds the connection failures of a watched pool into its Outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in _POOL_NOISE:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        outage = _pools.get(args[0]) if args and isinstance(args[0], str) else None
        if record.msg == _CONNECT_FAILED:
            if outage is None:
                return True  # a pool this module does not watch
            outage.failed(first_line(args[1]) if isinstance(args[1], BaseException) else str(args[1]))
        return False


def watch_pool(name: str, where: str) -> Outage:
    """The Outage of the psycopg_pool pool ``name`` (``where``: the redacted URL)."""
    global _filter
    with _installed:
        if _filter is None:
            _filter = _PoolFilter()
            logging.getLogger("psycopg.pool").addFilter(_filter)
    outage = _pools[name] = Outage(where)
    return outage
