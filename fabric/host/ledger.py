"""What a host agent writes down in its own folder so that its next start can undo what a
SIGKILL left in force (chaos faults, stopped processes): small JSON files, written whole."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def host_ledger(state_dir: str | Path, host_id: str, name: str) -> Path:
    """The ledger ``name`` of host ``host_id`` (in its own folder under the state folder)."""
    return Path(state_dir) / "hosts" / host_id / name


def write_ledger(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` whole (a temporary file renamed over it), or remove
    the file when ``value`` is empty: a reader never finds half of it (blocking, brief)."""
    if not value:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(value))
    temporary.replace(path)
