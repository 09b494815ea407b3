"""No module imports a layer above its own: fabric -> roles -> actors, and inside fabric
model, network < guest < host < controller < frontend, portal < client < chaos, server,
commands, cli (DESIGN.md, "Past one machine"). Every import counts: module level, inside
functions, and under TYPE_CHECKING, since each is a dependency a reader has to follow."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.paths import ROOT

#: the three packages, lowest first: a module may import its own package and those below it
PACKAGES = {"actors": 0, "roles": 1, "fabric": 2}

#: fabric's own layers (the first name under fabric/), lowest first; equal ranks may import
#: each other. Settings, logs and bytecode are small leaves every layer may use.
FABRIC_LAYERS = {
    "": 0,  # fabric/__init__.py (the version)
    "settings": 0,
    "logs": 0,
    "bytecode": 0,
    "lazy": 0,  # packages' public names loaded on first use
    "model": 0,
    "certs": 0,  # service certificates and their store: the front end, controller and guest read it
    "network": 0,
    "guest": 1,
    "host": 2,
    "controller": 3,
    "cluster": 3,  # the cluster CA, bootstrap tokens, joining hosts: beside the controller
    "frontend": 4,
    "portal": 4,  # served by RDFE (the front end) and reading its routes: the same layer
    "client": 5,  # the API client: above the front end it talks to, below what uses it
    "chaos": 6,
    "server": 6,
    "replica": 6,  # controller replicas: each runs the whole fabric (server) while it leads
    "commands": 6,
    "cli": 6,
    "testing": 6,  # runs a whole fabric for a user's test
    "pytest_plugin": 6,  # the pytest face of fabric.testing
}
TOP = max(FABRIC_LAYERS.values())

#: (importer, imported) pairs that break the layering today, each with the change that ends it.
#: The list only shrinks: a new pair fails the test, and so does a pair that no longer occurs.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    """The dotted name of a source file under ROOT."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, name: str, *, is_package: bool = False) -> Iterator[str]:
    """Every module the source of module `name` imports, relative imports resolved
    (`from x import y` names x.y too, as y may be a module)."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names if alias.name != "*")


def rank(module: str) -> tuple[int, int] | None:
    """(package rank, rank inside fabric) of one of our modules; None for anything else."""
    top, _, rest = module.partition(".")
    if top not in PACKAGES:
        return None
    if top != "fabric":
        return PACKAGES[top], 0
    layer = rest.partition(".")[0]
    if rest.endswith("__main__"):
        return PACKAGES[top], TOP  # `python -m` entry points are programs: the top layer
    if layer not in FABRIC_LAYERS:
        # A name that is not a module of ours (`from fabric import __version__`) ranks as the
        # package itself; a new folder must be given a layer above.
        path = ROOT / "fabric" / layer
        assert not (path.is_dir() or path.with_suffix(".py").exists()), (
            f"fabric/{layer} has no layer: add it to FABRIC_LAYERS in tests/test_layering.py"
        )
        return PACKAGES[top], 0
    return PACKAGES[top], FABRIC_LAYERS[layer]


def upward_imports() -> set[tuple[str, str]]:
    """(importer, imported) for every import of a module from a layer above the importer's."""
    found: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            importer = module_name(path)
            own = rank(importer)
            assert own is not None
            source = path.read_text()
            for imported in imported_modules(source, importer, is_package=path.name == "__init__.py"):
                theirs = rank(imported)
                if theirs is not None and theirs > own:
                    # `from fabric.chaos import runner` yields fabric.chaos and fabric.chaos.runner:
                    # report the longest name that is a module.
                    found.add((importer, _module_of(imported)))
    return {pair for pair in found if not any(_inside(pair, other) for other in found if other != pair)}


def _module_of(name: str) -> str:
    parts = name.split(".")
    while len(parts) > 1 and not _is_module(parts):
        parts.pop()
    return ".".join(parts)


def _is_module(parts: list[str]) -> bool:
    path = ROOT.joinpath(*parts)
    return path.is_dir() or path.with_suffix(".py").exists()


def _inside(pair: tuple[str, str], other: tuple[str, str]) -> bool:
    """Whether `pair` names a package whose module `other` already names, for the same importer."""
    return pair[0] == other[0] and other[1].startswith(pair[1] + ".")


def test_no_module_imports_a_layer_above_its_own() -> None:
    new = upward_imports() - KNOWN_VIOLATIONS
    assert not new, "imports from a layer above (fabric -> roles -> actors; inside fabric " + (
        "model, network < guest < host < controller < frontend, portal < client < chaos, server, "
        "commands, cli): " + ", ".join(f"{a} imports {b}" for a, b in sorted(new))
    )


def test_the_known_violations_still_occur() -> None:
    """A violation that was fixed leaves the allow-list, so that it cannot come back unseen."""
    gone = KNOWN_VIOLATIONS - upward_imports()
    assert not gone, f"no longer imported; remove from KNOWN_VIOLATIONS: {sorted(gone)}"


def test_the_check_sees_an_upward_import() -> None:
    """The walker finds imports in every form: absolute, relative, inside a function."""
    source = (
        "from . import _ref\n"
        "from .. import model\n"
        "import fabric.network\n"
        "def later():\n"
        "    from fabric.chaos.runner import Run\n"
    )
    found = set(imported_modules(source, "fabric.host.sample"))
    assert {"fabric.host._ref", "fabric.model", "fabric.network", "fabric.chaos.runner"} <= found
    assert rank("fabric.chaos.runner") > rank("fabric.host.sample")  # type: ignore[operator]
    assert rank("fabric.model") < rank("fabric.guest.disk")  # type: ignore[operator]
    assert rank("roles.hosts") > rank("actors._cell")  # type: ignore[operator]
    assert rank("fabric.guest.__main__") == rank("fabric.cli")
