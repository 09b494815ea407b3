"""Load a site folder the way IIS would pick a handler: asgi.py, else wsgi.py, else static files.

A folder holding `asgi.py` that defines `app` is an ASGI application; else a folder holding
`wsgi.py` that defines `application` is a WSGI application (run in hypercorn's thread pool);
else the folder's files are served as static content. While the module is imported, the site
folder is put at the front of `sys.path`, so `asgi.py` can import modules that sit beside it;
it is removed again afterwards, so imports that run later, inside a request, do not see it.

Sites in one worker are kept apart at import time: while a site is imported, modules that an
earlier site imported from its own folder are set aside, so two sites that each hold a
`helper.py` (or `views.py`, `settings.py`) each get their own. Afterwards `sys.modules` keeps
the latest site's module under the shared name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from .static import StaticFiles

_module_numbers = itertools.count()
_site_folders: set[Path] = set()


class SiteLoadError(Exception):
    """A site folder that cannot be served: missing, or its asgi.py/wsgi.py fails to import."""


class SiteKind(Enum):
    """How a site folder is served."""

    ASGI = "asgi"
    WSGI = "wsgi"
    STATIC = "static"


class LoadedSite(msgspec.Struct, frozen=True):
    """A loaded site folder: its kind and the callable that serves it."""

    kind: SiteKind
    folder: Path
    app: Callable[..., Any]


def load_site(folder: str | Path) -> LoadedSite:
    """Load the application in `folder`.

    Raises SiteLoadError if the folder does not exist, if asgi.py/wsgi.py raises while being
    imported, or if it does not define `app`/`application` as a callable.
    """
    path = Path(folder).absolute()
    if not path.is_dir():
        raise SiteLoadError(f"site folder {path} does not exist; check the site's physicalDirectory")
    for kind, file_name, attribute in (
        (SiteKind.ASGI, "asgi.py", "app"),
        (SiteKind.WSGI, "wsgi.py", "application"),
    ):
        source = path / file_name
        if source.is_file():
            module = _import_file(source)
            app = getattr(module, attribute, None)
            if app is None:
                raise SiteLoadError(f"{source} does not define `{attribute}`; add it")
            if not callable(app):
                raise SiteLoadError(f"`{attribute}` in {source} is not callable")
            return LoadedSite(kind, path, app)
    return LoadedSite(SiteKind.STATIC, path, StaticFiles(path))


def _import_file(source: Path) -> ModuleType:
    # Each site gets its own module name: two sites both holding asgi.py must not share one.
    name = f"_reddog_site_{next(_module_numbers)}_{source.stem}"
    spec = importlib.util.spec_from_file_location(name, source)
    if spec is None or spec.loader is None:
        raise SiteLoadError(f"{source} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = source.parent
    _site_folders.add(folder)
    set_aside = _modules_of_other_sites(folder)
    for other in set_aside:
        del sys.modules[other]
    sys.path.insert(0, str(folder))
    sys.modules[name] = module  # so dataclasses, pickle and typing can find the module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(name, None)
        if isinstance(error, Exception):
            raise SiteLoadError(f"importing {source} failed: {type(error).__name__}: {error}") from error
        raise
    finally:
        with contextlib.suppress(ValueError):  # the module may have removed it itself
            sys.path.remove(str(folder))
        for other, other_module in set_aside.items():
            sys.modules.setdefault(other, other_module)
    return module


def _modules_of_other_sites(folder: Path) -> dict[str, ModuleType]:
    """Return the loaded modules whose file lies in a site folder other than `folder`."""
    found: dict[str, ModuleType] = {}
    if not _site_folders - {folder}:
        return found  # no other site: nothing to set aside (and no walk of every module)
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or name.startswith("_reddog_site_"):
            continue
        owners = [f for f in _site_folders if Path(file).is_relative_to(f)]
        # Nested folders (a virtual application inside the root site) belong to the deepest.
        if owners and max(owners, key=lambda f: len(f.parts)) != folder:
            found[name] = module
    return found
