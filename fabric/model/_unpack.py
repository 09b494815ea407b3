"""Open an untrusted .cspkg: refuse hostile entries before reading a byte of their content."""

from __future__ import annotations

import hashlib
import re
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fabric.model._manifest import MANIFEST, ExtractLimits, Manifest, ManifestEntry, problem, read_manifest
from fabric.model.errors import PackageError, Problem

_CHUNK = 1 << 16
_MAX_MANIFEST = 16 * 1024 * 1024
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError)
_KINDS = {
    stat.S_IFLNK: "a symlink",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
}


@dataclass
class Opened:
    """An open package whose entries passed every check, and its manifest."""

    zf: zipfile.ZipFile
    files: list[zipfile.ZipInfo]
    dirs: list[zipfile.ZipInfo]
    manifest: Manifest
    entries: dict[str, ManifestEntry]

    def names(self) -> set[str]:
        """Every file name in the package."""
        return {i.filename for i in self.files}


def check_entries(infos: list[zipfile.ZipInfo], file: str, limits: ExtractLimits) -> list[Problem]:
    """Every reason to refuse these zip entries, before any is extracted."""
    problems: list[Problem] = []

    def bad(name: str, why: str) -> None:
        problems.append(problem(file, f"entry '{name}' {why}"))

    if len(infos) > limits.max_files:
        problems.append(problem(file, f"has {len(infos)} entries; the limit is {limits.max_files}"))
    seen: dict[str, str] = {}
    file_names: set[str] = set()
    total = packed = 0
    for info in infos:
        name = info.filename
        core = name[:-1] if name.endswith("/") else name
        parts = core.split("/")
        kind = _KINDS.get(stat.S_IFMT(info.external_attr >> 16))
        if not core or len(name) > limits.max_name_length or any(len(p) > 255 for p in parts):
            bad(name, "has an empty or overlong name")
        elif name.startswith("/") or re.match(r"[A-Za-z]:", name):
            bad(name, "is an absolute path; packages hold relative paths only")
        elif "\\" in name:
            bad(name, "contains a backslash; packages use '/' between folders")
        elif ".." in parts:
            bad(name, "climbs out of the package with '..'")
        elif any(p in ("", ".") for p in parts):
            bad(name, "has an empty or '.' path component")
        elif kind:
            bad(name, f"is {kind}; packages hold regular files and folders only")
        elif info.flag_bits & 0x1:
            bad(name, "is encrypted")
        elif info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            bad(name, "uses an unsupported compression method")
        key = unicodedata.normalize("NFC", core).casefold()
        if key in seen:
            bad(
                name,
                f"duplicates '{seen[key]}'" + (" (names differ only in case)" if seen[key] != core else ""),
            )
        seen[key] = core
        if not name.endswith("/"):
            file_names.add(key)
            total += info.file_size
            packed += info.compress_size
            if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(
                info.compress_size, 1
            ):
                bad(name, f"expands {info.file_size // max(info.compress_size, 1)}x; refusing a zip bomb")
    for key in file_names:
        parts = key.split("/")
        for cut in range(1, len(parts)):
            if "/".join(parts[:cut]) in file_names:
                problems.append(problem(file, f"'{'/'.join(parts[:cut])}' is both a file and a folder"))
    if total > limits.max_total_bytes:
        problems.append(problem(file, f"expands to {total} bytes; the limit is {limits.max_total_bytes}"))
    elif total > limits.ratio_floor_bytes and total > limits.max_ratio * max(packed, 1):
        problems.append(problem(file, f"expands {total // max(packed, 1)}x overall; refusing a zip bomb"))
    return problems


def open_package(path: Path, limits: ExtractLimits) -> Opened:
    """Open and check a package and its manifest; the caller closes `zf`. Raises PackageError."""
    file = str(path)
    if path.is_dir():
        raise PackageError([problem(file, "is a directory; expected a .cspkg file")])
    if not path.exists():
        raise PackageError([problem(file, "does not exist; check the path")])
    try:
        zf = zipfile.ZipFile(path)
    except _CORRUPT as exc:
        raise PackageError([problem(file, f"is not a valid package (corrupt zip: {exc})")]) from None
    try:
        infos = zf.infolist()
        problems = check_entries(infos, file, limits)
        if problems:
            raise PackageError(problems)
        files = [i for i in infos if not i.is_dir()]
        by_name = {i.filename: i for i in files}
        if MANIFEST not in by_name:
            raise PackageError([problem(file, f"has no {MANIFEST}; build it with `fabric package`")])
        manifest = read_manifest(
            read_member(zf, by_name[MANIFEST], file, _MAX_MANIFEST), f"{file}:{MANIFEST}"
        )
        entries = {e.path: e for e in manifest.files}
        for name, info in by_name.items():
            if name != MANIFEST and name not in entries:
                problems.append(problem(file, f"entry '{name}' is not listed in the manifest"))
            elif name in entries and entries[name].size != info.file_size:
                problems.append(
                    problem(
                        file,
                        f"entry '{name}' is {info.file_size} bytes; the manifest says {entries[name].size}",
                    )
                )
        for name in entries:
            if name not in by_name:
                problems.append(problem(file, f"manifest lists '{name}', which the package does not hold"))
        for name in (manifest.definition, manifest.configuration):
            if name not in entries:
                problems.append(problem(file, f"manifest names '{name}' but does not list it"))
        if problems:
            raise PackageError(problems)
        return Opened(zf, files, [i for i in infos if i.is_dir()], manifest, entries)
    except BaseException:
        zf.close()
        raise


def stream(zf: zipfile.ZipFile, info: zipfile.ZipInfo, file: str) -> Iterator[bytes]:
    """The content of one entry in chunks, never more than its declared size."""
    left = info.file_size
    try:
        with zf.open(info) as f:
            while chunk := f.read(_CHUNK):
                left -= len(chunk)
                if left < 0:
                    raise PackageError([problem(file, f"entry '{info.filename}' is larger than declared")])
                yield chunk
    except _CORRUPT as exc:
        raise PackageError([problem(file, f"entry '{info.filename}' is corrupt: {exc}")]) from None
    if left:
        raise PackageError([problem(file, f"entry '{info.filename}' is shorter than declared")])


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, file: str, cap: int) -> bytes:
    """The whole content of a small entry; refuses entries over `cap` bytes."""
    if info.file_size > cap:
        raise PackageError([problem(file, f"entry '{info.filename}' is too large ({info.file_size} bytes)")])
    return b"".join(stream(zf, info, file))


def check_digest(entry: ManifestEntry, digest: str, file: str) -> Problem | None:
    """A problem if a file's SHA-256 does not match the manifest."""
    if digest != entry.sha256:
        return problem(file, f"entry '{entry.path}' does not match its SHA-256 in the manifest")
    return None


def verify(opened: Opened, file: str) -> list[Problem]:
    """Hash every file in the package and compare with the manifest, without writing anything."""
    problems = []
    for info in opened.files:
        if info.filename == MANIFEST:
            continue
        digest = hashlib.sha256()
        for chunk in stream(opened.zf, info, file):
            digest.update(chunk)
        found = check_digest(opened.entries[info.filename], digest.hexdigest(), file)
        if found:
            problems.append(found)
    return problems
