"""Warm the bytecode cache of reddog's own packages once, for every process the fabric starts.

A fabric starts a few interpreters per VM, and each imports actors/, roles/ and fabric/. With
PYTHONDONTWRITEBYTECODE set (some sandboxes and CI machines set it), nothing is ever cached and
every one of them compiles those modules again: about 40 ms per process here. compileall writes
the cache whatever that variable says and skips what is up to date.
"""

from __future__ import annotations

import compileall
import importlib.util
from pathlib import Path

_PACKAGES = ("actors", "roles", "fabric")


def warm_bytecode() -> None:
    """Compile our packages' modules to __pycache__ where missing or stale; errors are ignored
    (a read-only installation simply stays as it is)."""
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            try:
                compileall.compile_dir(Path(location), quiet=2, workers=1)
            except OSError:
                continue
