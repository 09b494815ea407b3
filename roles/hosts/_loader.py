"""Find and load a role's RoleEntryPoint subclass in its code folder, and call its methods."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from roles._threads import run_in_daemon_thread
from roles.entry_point import RoleEntryPoint


class EntryPointError(Exception):
    """The role's entry point cannot be loaded; the message says what to change."""


def module_file(app_root: Path, entry_module: str) -> Path:
    """Return the .py file ``entry_module`` names in app_root ("worker.dll" maps to worker.py)."""
    name = Path(entry_module).name
    stem = name[: -len(".dll")] if name.lower().endswith(".dll") else name.removesuffix(".py")
    return app_root / f"{stem}.py"


def find_entry_point(app_root: str | Path, entry_module: str = "") -> type[RoleEntryPoint] | None:
    """Return the role's RoleEntryPoint subclass, or None when app_root defines none.

    With ``entry_module`` set, that module must define one. Otherwise the .py files directly in
    app_root are tried in sorted order, and the first that defines a subclass wins; files that
    never mention RoleEntryPoint are not imported, so unrelated scripts do not run.

    Raises:
        EntryPointError: the named module is missing, defines no subclass, or fails to import.
    """
    root = Path(app_root)
    if not root.is_dir():
        raise EntryPointError(f"the role's code folder {root} does not exist; check app_root")
    if entry_module:
        path = module_file(root, entry_module)
        if not path.is_file():
            raise EntryPointError(
                f"entry module {entry_module!r} names {path.name}, which is not in {root}; "
                "fix the entry point in the service definition"
            )
        found = _subclass_in(_import(path))
        if found is None:
            raise EntryPointError(
                f"{path} defines no RoleEntryPoint subclass; add one or name another module"
            )
        return found
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "RoleEntryPoint" not in text:
            continue
        found = _subclass_in(_import(path))
        if found is not None:
            return found
    return None


def _import(path: Path) -> ModuleType:
    """Import a role module under its own name (app_root is first on sys.path, so its siblings
    import as usual); a name already taken by another loaded module is an error, not a silent
    mix-up with, say, the standard library's module of that name."""
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
            return loaded
        raise EntryPointError(
            f"{path.name} has the same name as the already loaded module {name!r} "
            f"({getattr(loaded, '__file__', 'built in')}); rename {path.name}"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EntryPointError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(name, None)
        raise EntryPointError(f"importing {path} failed: {type(error).__name__}: {error}") from error
    return module


def _subclass_in(module: ModuleType) -> type[RoleEntryPoint] | None:
    """The first RoleEntryPoint subclass defined (not merely imported) in ``module``."""
    for value in list(vars(module).values()):
        if (
            isinstance(value, type)
            and issubclass(value, RoleEntryPoint)
            and value is not RoleEntryPoint
            and value.__module__ == module.__name__
        ):
            return value
    return None


async def call_user(method: Callable[[], Any]) -> Any:
    """Call an entry point method: await an async one, run a plain one in a worker thread.

    The thread is a daemon, abandoned if the caller is cancelled, so neither a stop nor the
    process's exit waits for it.
    """
    if inspect.iscoroutinefunction(method) or _is_default(method):
        result = method()
    else:
        result = await run_in_daemon_thread(method, name=getattr(method, "__name__", "role"))
    if inspect.isawaitable(result):
        result = await result
    return result


def _is_default(method: Callable[[], Any]) -> bool:
    """RoleEntryPoint's own methods return a coroutine at once: no thread needed."""
    function = getattr(method, "__func__", None)
    return function is not None and getattr(RoleEntryPoint, function.__name__, None) is function
