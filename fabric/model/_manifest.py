"""The package manifest and the limits applied when reading a package."""

from __future__ import annotations

import msgspec

from fabric.model.errors import PackageError, Problem

CSDEF = "ServiceDefinition.csdef"
SERVICE_TOML = "service.toml"
MANIFEST = "manifest.json"


class ManifestEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One file in a package: its path, size in bytes and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """manifest.json: what a package holds and where each role's folders went."""

    format: int = 1
    service: str
    definition: str
    configuration: str
    directories: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    files: tuple[ManifestEntry, ...] = ()


class ExtractLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Caps that make a hostile package (zip bomb, huge listing) fail before it costs anything."""

    max_total_bytes: int = 2 * 1024**3
    max_files: int = 20_000
    max_ratio: int = 200
    ratio_floor_bytes: int = 1024**2  # small files may compress very well; only big ones count
    max_name_length: int = 1024


DEFAULT_LIMITS = ExtractLimits()


def problem(path: object, message: str) -> Problem:
    """A problem about a whole file (a package or a file in it), without a line."""
    return Problem(file=str(path), message=message)


def read_manifest(data: bytes, file: str) -> Manifest:
    """Decode manifest.json; raises PackageError if it is not a valid manifest."""
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise PackageError([problem(file, f"manifest is invalid: {exc}")]) from None
    except msgspec.DecodeError as exc:
        raise PackageError([problem(file, f"manifest is not valid JSON: {exc}")]) from None
    bad = [
        inner
        for dirs in manifest.directories.values()
        for inner in dirs.values()
        if not _safe_relative(inner)
    ]
    for name in (manifest.definition, manifest.configuration, *bad):
        if "/" in name or not _safe_relative(name):
            raise PackageError([problem(file, f"manifest names an unsafe path '{name}'")])
    if manifest.definition not in (CSDEF, SERVICE_TOML):
        raise PackageError([problem(file, f"manifest definition must be {CSDEF} or {SERVICE_TOML}")])
    return manifest


def _safe_relative(name: str) -> bool:
    parts = name.split("/")
    return (
        bool(name)
        and not name.startswith("/")
        and "\\" not in name
        and ":" not in parts[0]
        and all(p not in ("", ".", "..") for p in parts)
    )
