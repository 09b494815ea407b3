"""The shared state folder under a controller replica's term: written only while the term lasts.

Replicas share the state folder: staged packages, service certificates, deployment folders
(configurations and extracted packages). Those stay files (a package may be a GiB; the goal
state records name them), so the database cannot fence them; instead every write or removal
there by a leader is preceded, in the same thread and step, by a check that its term still
lasts by this process's monotonic clock: the last renewal of its lease, a fenced database
transaction, was sent less than ``leader_renew_deadline`` ago (less than the lease, so no other
replica can lead yet), and no write of its was fenced since. A leader paused past its lease and
resumed fails that check before its loop has even noticed: a write is refused (503, nothing
written) and a removal skipped (what it would remove may be the next leader's now; at worst a
file is left over). A single fabric (no replica) has no guard: every check passes.

The guard is process-wide: a replica runs one term at a time (:func:`guarded`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fabric.controller.messages import ControllerError

_acting: Callable[[], bool] | None = None


@contextmanager
def guarded(acting: Callable[[], bool]) -> Iterator[None]:
    """Writes to the shared folder need ``acting()`` (thread-safe) for the block (one term)."""
    global _acting
    _acting = acting
    try:
        yield
    finally:
        _acting = None


def acting() -> bool:
    """Whether this process may change the shared folder now (always, outside a replica)."""
    guard = _acting
    return guard is None or guard()


def refusal(what: str) -> str:
    """The message of a write refused because the term ended."""
    return f"this controller replica no longer leads: it did not {what} (nothing written); retry"


def check(what: str) -> None:
    """Right before writing to the shared folder.

    Raises:
        ControllerError: 503 ServiceUnavailable, the term is over.
    """
    if not acting():
        raise ControllerError("ServiceUnavailable", refusal(what), 503)


def remove(path: Path) -> None:
    """Remove a file or folder of the shared folder; nothing once the term ended (what it named
    may be the next leader's now)."""
    if not acting():
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
