"""Public names of a package loaded on first use (PEP 562): importing one module of a package,
its messages say, must not import everything its ``__init__`` re-exports."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each name of ``exports`` (name -> module) the first
    time it is asked for and keeps it in the package's ``namespace`` (its ``globals()``)."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        """Import a public name from its module the first time it is used."""
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
