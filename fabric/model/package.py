"""Service packages (.cspkg): a zip of definition, configuration and role code, with a manifest."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

from fabric.model._files import MAX_MODEL_BYTES, read_model_bytes
from fabric.model._limits import MAX_INSTANCES
from fabric.model._manifest import (
    CSDEF,
    DEFAULT_LIMITS,
    MANIFEST,
    SERVICE_TOML,
    ExtractLimits,
    Manifest,
    ManifestEntry,
    problem,
)
from fabric.model._unpack import Opened, check_digest, open_package, read_member, stream, verify
from fabric.model.errors import PackageError, Problem
from fabric.model.service import Layout, Service, assemble, declared_dirs, load_service

_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same service always packs to the same bytes
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn"}


# --- building ---------------------------------------------------------------------------


def _walk(folder: Path, prefix: str, problems: list[Problem]) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in list(dirnames):
            if (here / name).is_symlink():
                problems.append(problem(here / name, "is a symlink; replace it with a real folder"))
                dirnames.remove(name)
        for name in sorted(filenames):
            path = here / name
            if name.endswith((".pyc", ".pyo")):
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                problems.append(problem(path, "is a symlink; replace it with a copy of the file"))
            elif not stat.S_ISREG(mode):
                problems.append(problem(path, "is not a regular file; remove it from the role folder"))
            else:
                yield f"{prefix}/{path.relative_to(folder).as_posix()}", path


def _collect(
    service: Service, problems: list[Problem]
) -> tuple[list[tuple[str, Path]], dict[str, dict[str, str]]]:
    files: list[tuple[str, Path]] = []
    directories: dict[str, dict[str, str]] = {}
    for role in service.definition.roles:
        role_dir = service.role_dir(role.name).resolve()
        files.extend(_walk(role_dir, f"roles/{role.name}", problems))
        mapping = directories.setdefault(role.name, {})
        for k, declared in enumerate(declared_dirs(role)):
            actual = service.content_dir(role.name, declared).resolve()
            if actual == role_dir or role_dir in actual.parents:
                inner = actual.relative_to(role_dir).as_posix()
                mapping[declared] = f"roles/{role.name}" + ("" if inner == "." else f"/{inner}")
            else:
                mapping[declared] = f"content/{role.name}/{k}"
                files.extend(_walk(actual, mapping[declared], problems))
    return files, {r: m for r, m in directories.items() if m}


def build_package(
    service_dir: str | Path,
    out_path: str | Path,
    config: str | Path | None = None,
    *,
    limits: ExtractLimits = DEFAULT_LIMITS,
    max_instances: int = MAX_INSTANCES,
) -> Manifest:
    """Validate a service folder and write it as a .cspkg (atomically); returns the manifest.

    Role code comes from `<service>/<Role>/`, other folders from the paths the definition gives.
    More than `max_instances` instances in all is refused (a fabric passes its setting).
    Raises ModelError for an invalid service and PackageError for files that cannot be packed.
    """
    service = load_service(service_dir, config, require_code=True, max_instances=max_instances)
    out = Path(out_path)
    definition_name = SERVICE_TOML if service.definition_file.lower().endswith(".toml") else CSDEF
    config_name = Path(service.configuration_file).name
    problems: list[Problem] = []
    files = [
        (definition_name, Path(service.definition_file)),
        (config_name, Path(service.configuration_file)),
    ]
    role_files, directories = _collect(service, problems)
    files += role_files
    seen: dict[str, str] = {}
    for name, _ in files:
        key = unicodedata.normalize("NFC", name).casefold()
        if key in seen and seen[key] != name:
            problems.append(problem(out, f"'{name}' and '{seen[key]}' differ only in case; rename one"))
        seen[key] = name
    total = sum(path.stat().st_size for _, path in files)
    if total > limits.max_total_bytes or len(files) >= limits.max_files:
        problems.append(problem(out, f"{len(files)} files, {total} bytes is over the package limits"))
    if problems:
        raise PackageError(problems)
    entries = []
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as zf:
            for name, path in sorted(files):
                data = path.read_bytes()
                entries.append(
                    ManifestEntry(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
                )
                executable = path.stat().st_mode & 0o111
                _add(zf, name, data, 0o755 if executable else 0o644, limits)
            manifest = Manifest(
                service=service.definition.name,
                definition=definition_name,
                configuration=config_name,
                directories=directories,
                files=tuple(entries),
            )
            _add(zf, MANIFEST, msgspec.json.format(msgspec.json.encode(manifest), indent=2), 0o644, limits)
        os.chmod(tmp_name, 0o644)  # mkstemp made it private; a package is an ordinary file
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return manifest


def _add(zf: zipfile.ZipFile, name: str, data: bytes, mode: int, limits: ExtractLimits) -> None:
    info = zipfile.ZipInfo(name, _EPOCH)
    info.create_system = 3  # unix, so the mode bits below are read back
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    # A file of zeros compresses past the bomb ratio; store it so our own packages always pass.
    if len(data) > limits.ratio_floor_bytes and len(data) > limits.max_ratio * len(zlib.compress(data)):
        info.compress_type = zipfile.ZIP_STORED
    zf.writestr(info, data)


# --- reading ----------------------------------------------------------------------------


class _ZipLayout(Layout):
    """Role folders as paths inside an unextracted package."""

    in_memory = True

    def __init__(self, opened: Opened, path: Path) -> None:
        super().__init__(path, opened.manifest.directories)
        self.files = opened.names()

    def role_dir(self, role: str) -> str:
        return f"roles/{role}"

    def content_dir(self, role: str, declared: str) -> str:
        return self.manifest_dirs.get(role, {}).get(declared, self.role_dir(role))

    def is_dir(self, path: str) -> bool:
        return any(name.startswith(path.rstrip("/") + "/") for name in self.files)

    def is_file(self, path: str) -> bool:
        return path in self.files


def _service_of(
    opened: Opened, path: Path, config: str | Path | None, strict: bool, max_instances: int = MAX_INSTANCES
) -> Service:
    file = str(path)
    by_name = {i.filename: i for i in opened.files}
    manifest = opened.manifest
    definition = read_member(opened.zf, by_name[manifest.definition], file, MAX_MODEL_BYTES)
    if config is None:
        cfg = (
            read_member(opened.zf, by_name[manifest.configuration], file, MAX_MODEL_BYTES),
            f"{file}:{manifest.configuration}",
        )
    else:
        cfg = (read_model_bytes(Path(config)), str(config))
    return assemble(
        (definition, f"{file}:{manifest.definition}"),
        cfg,
        _ZipLayout(opened, path),
        strict=strict,
        root=file,
        max_instances=max_instances,
    )


def read_package(
    path: str | Path,
    config: str | Path | None = None,
    *,
    strict: bool = False,
    limits: ExtractLimits = DEFAULT_LIMITS,
    max_instances: int = MAX_INSTANCES,
) -> Service:
    """Check a .cspkg completely (entries, manifest, hashes, model) without extracting it.

    `config` replaces the configuration inside the package, as uploading a separate .cscfg
    did. The returned Service has `packaged` set: its role folders are paths in the zip.
    Raises PackageError for a hostile or corrupt package, ModelError for an invalid model
    (more than `max_instances` instances in all included).
    """
    p = Path(path)
    opened = open_package(p, limits)
    with opened.zf:
        problems = verify(opened, str(p))
        if problems:
            raise PackageError(problems)
        return _service_of(opened, p, config, strict, max_instances)


def extract_package(
    path: str | Path,
    dest: str | Path,
    *,
    limits: ExtractLimits = DEFAULT_LIMITS,
    max_instances: int = MAX_INSTANCES,
) -> Path:
    """Extract a checked package into `dest`, all or nothing; returns `dest`.

    Files are written into a temporary sibling folder, verified against the manifest, and the
    folder is renamed to `dest` only when everything matched; on any failure nothing is left.
    `dest` must not exist. Raises PackageError or ModelError.
    """
    p, target = Path(path), Path(dest)
    file = str(p)
    if target.exists() or target.is_symlink():
        raise PackageError([problem(target, "already exists; remove it or choose another folder")])
    if not target.parent.is_dir():
        raise PackageError([problem(target.parent, "does not exist; create it first")])
    opened = open_package(p, limits)
    with opened.zf:
        _service_of(opened, p, None, False, max_instances)  # refuse an invalid model before writing anything
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        try:
            problems = _write_all(opened, tmp, file)
            if problems:
                raise PackageError(problems)
            tmp.chmod(0o755)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _write_all(opened: Opened, tmp: Path, file: str) -> list[Problem]:
    problems = []
    for info in opened.dirs:
        tmp.joinpath(*info.filename.rstrip("/").split("/")).mkdir(parents=True, exist_ok=True)
    for info in opened.files:
        # Names were checked (relative, no '..', no links), and only this code creates entries
        # under tmp, so every target is a fresh path inside tmp.
        target = tmp.joinpath(*info.filename.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        )
        digest = hashlib.sha256()
        with os.fdopen(os.open(target, flags, mode), "wb") as out:
            for chunk in stream(opened.zf, info, file):
                digest.update(chunk)
                out.write(chunk)
        entry = opened.entries.get(info.filename)
        found = entry and check_digest(entry, digest.hexdigest(), file)
        if found:
            problems.append(found)
    return problems
