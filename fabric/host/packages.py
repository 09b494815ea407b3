"""A role's package on a joined host: packed on the controller's side into one tar named by its
SHA-256, shipped in bounded chunks, kept by digest under the host's own state folder, and the
GuestConfig re-rooted there (nothing the controller names is a path on the host).

Layout of a package: ``code/`` (the role's code) and ``sites/<n>/`` (the n-th site folder of the
GuestConfig's ``site_dirs``, by sorted key). Its tar is deterministic (sorted names, no owners,
no times), so the same files always make the same digest: one transfer per package per host.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
import time
import uuid
from pathlib import Path, PurePosixPath

import msgspec

from actors import register_error
from fabric.guest.messages import GuestConfig

#: a digest as the controller names a package
DIGEST = re.compile(r"[0-9a-f]{64}")
#: an instance id as a folder name on the host
INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
#: packages a host keeps besides those its VMs use, and how old one must be to go
KEEP_NEWEST = 8
PRUNE_AFTER = 600.0
#: the guest agent classes a joined host accepts to install
AGENT_PREFIX = "fabric.guest."


class PackageError(ValueError):
    """A package or a GuestConfig a joined host refuses (the message says why)."""


@register_error()
class PackageMissing(PackageError):
    """A start names a package the joined host does not hold (never shipped, or pruned since):
    the controller ships it and asks again (registered: it crosses the link as itself)."""


def site_keys(site_dirs: dict[str, str]) -> list[str]:
    """The site keys in the order their folders sit in a package (``sites/<n>``)."""
    return sorted(site_dirs)


def _add_tree(tar: tarfile.TarFile, folder: Path, prefix: str) -> None:
    entries = [folder, *sorted(folder.rglob("*"))] if folder.is_dir() else []
    for path in entries:
        rel = path.relative_to(folder).as_posix()
        name = prefix if rel == "." else f"{prefix}/{rel}"
        if path.is_symlink():
            continue  # a package holds files and folders only
        info = tarfile.TarInfo(name)
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        if path.is_dir():
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        elif path.is_file():
            info.size = path.stat().st_size
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)


def pack(role_code_dir: str, site_dirs: dict[str, str], cache: Path) -> tuple[str, Path]:
    """Pack a role's code and site folders (controller paths) into ``cache/<digest>.tar``.

    Returns the digest and the tar's path (a tar already there is reused).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, Path(role_code_dir), "code")
        for n, key in enumerate(site_keys(site_dirs)):
            _add_tree(tar, Path(site_dirs[key]), f"sites/{n}")
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{digest}.tar"
    if not path.exists():
        part = path.with_name(f"{digest}.{uuid.uuid4().hex}.part")
        part.write_bytes(data)
        part.replace(path)
    else:
        os.utime(path)  # reused: not pruned as unused now (prune_tars)
    return digest, path


class PackageCache:
    """The packages a joined host holds: ``<folder>/<digest>/`` once whole and checked."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def path(self, digest: str) -> Path:
        """The folder of a package (it may not be there).

        Raises:
            PackageError: not a digest.
        """
        if not DIGEST.fullmatch(digest):
            raise PackageError(f"{digest[:80]!r} is not a package digest (64 hex digits)")
        return self.folder / digest

    def has(self, digest: str) -> bool:
        """Whether the package is here, whole."""
        return self.path(digest).is_dir()

    def receive(self, digest: str, offset: int, total: int, data: bytes) -> int:
        """Append a chunk (in order); at the last one check the digest and unpack. Returns the
        bytes held so far.

        Raises:
            PackageError: out of order, too large, or not the digest it claims.
        """
        target = self.path(digest)
        if target.is_dir():
            return total
        if not 0 < total <= self.max_bytes:
            raise PackageError(f"a package of {total} bytes is refused (at most {self.max_bytes})")
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f"{digest}.part"
        held = part.stat().st_size if part.exists() else 0
        if offset == 0 and held:
            part.unlink()
            held = 0
        if offset != held or offset + len(data) > total:
            raise PackageError(f"chunk at {offset} of package {digest[:12]} is out of order ({held} held)")
        with part.open("ab") as f:
            f.write(data)
        held += len(data)
        if held == total:
            self._unpack(digest, part, target)
        return held

    def prune(
        self, keep: set[str], *, newest: int = KEEP_NEWEST, older_than: float = PRUNE_AFTER
    ) -> list[str]:
        """Remove packages no VM uses (not in ``keep``), beyond the ``newest`` few, that were
        unpacked more than ``older_than`` seconds ago (one may be about to boot). Returns the
        digests removed."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir() if p.is_dir() and DIGEST.fullmatch(p.name)]
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        now = time.time()
        removed = []
        for path in found[newest:]:
            if path.name not in keep and now - path.stat().st_mtime > older_than:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed

    def _unpack(self, digest: str, part: Path, target: Path) -> None:
        sha = hashlib.sha256()
        with part.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        if sha.hexdigest() != digest:
            part.unlink()
            raise PackageError(f"package {digest[:12]} arrived with another digest; send it again")
        staging = self.folder / f"{digest}.unpacking"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        with tarfile.open(part, mode="r:") as tar:
            for member in tar.getmembers():
                _check_member(member)
            tar.extractall(staging, filter="data")
        part.unlink()
        staging.replace(target)


def _check_member(member: tarfile.TarInfo) -> None:
    rel = PurePosixPath(member.name)
    if rel.is_absolute() or ".." in rel.parts or rel.parts[:1] not in (("code",), ("sites",)):
        raise PackageError(f"a package may not hold {member.name[:120]!r}")
    if not (member.isfile() or member.isdir()):
        raise PackageError(f"a package holds files and folders only, not {member.name[:120]!r}")


def _moved(path: str, old: PurePosixPath, new: Path) -> str:
    """``path`` (under ``old``, a controller folder) moved under ``new``.

    Raises:
        PackageError: it is not under ``old``, or climbs out of it.
    """
    try:
        rel = PurePosixPath(path).relative_to(old)
    except ValueError:
        raise PackageError(f"{path[:200]!r} is not inside the VM's folder {str(old)[:200]!r}") from None
    if ".." in rel.parts:
        raise PackageError(f"{path[:200]!r} climbs out of the VM's folder")
    return str(new / rel)


def reroot(config: GuestConfig, state_dir: Path, package: Path) -> GuestConfig:
    """The GuestConfig as this host runs it: its VM under ``<state_dir>/vms``, its code and sites
    from the unpacked ``package``, every path of its environment moved along.

    Raises:
        PackageError: an instance id that is not a folder name, a path outside the VM, or a
            guest agent that is not the fabric's.
    """
    if not INSTANCE.fullmatch(config.instance_id) or config.instance_id in (".", ".."):
        raise PackageError(f"{config.instance_id[:80]!r} is not an instance id")
    if not config.agent.startswith(AGENT_PREFIX):
        raise PackageError(f"guest agent {config.agent[:80]!r} is not one of the fabric's")
    old = PurePosixPath(config.vm_root)
    vm_root = state_dir / "vms" / config.instance_id
    env = config.environment
    resources = {
        name: msgspec.structs.replace(r, root_path=_moved(r.root_path, old, vm_root))
        for name, r in env.local_resources.items()
    }
    certificates = {
        name: msgspec.structs.replace(
            c, path=_moved(c.path, old, vm_root), key_path=_moved(c.key_path, old, vm_root)
        )
        for name, c in env.certificates.items()
    }
    keys = site_keys(config.site_dirs)
    return msgspec.structs.replace(
        config,
        vm_root=str(vm_root),
        role_code_dir=str(package / "code"),
        site_dirs={key: str(package / "sites" / str(n)) for n, key in enumerate(keys)},
        state_dir=str(state_dir),
        environment=msgspec.structs.replace(env, local_resources=resources, certificates=certificates),
    )


def prune_tars(cache: Path, keep: set[str], older_than: float) -> list[str]:
    """Remove the controller's packed tars (``cache/<digest>.tar``) no deployment refers to (not
    in ``keep``) that were not packed or reused for ``older_than`` seconds. Returns their digests."""
    if not cache.is_dir():
        return []
    now = time.time()
    removed = []
    for path in cache.iterdir():
        digest = path.name.removesuffix(".tar")
        if path.suffix != ".tar" or not DIGEST.fullmatch(digest) or digest in keep:
            continue
        try:
            if now - path.stat().st_mtime > older_than:
                path.unlink()
                removed.append(digest)
        except FileNotFoundError:
            continue
    return removed
