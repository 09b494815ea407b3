"""A private, read-only view of the filesystem for one process, built as bubblewrap builds one.

A process about to drop root calls ``enter_sandbox``: it gets a mount namespace of its own in
which home folders and the given secret folders are hidden under empty tmpfs mounts, the folders
it needs (its interpreter's, the code it imports, its own data) are bound back at the same
paths, ``/tmp`` and ``/dev/shm`` are private, and every mount but the writable ones is made
read-only. Nothing is kept that would let it undo this: the caller then drops to an
unprivileged user with no capabilities (see _privileges). Linux only; needs root.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

#: The environment variable a process actor's sandbox travels in, from parent to child.
SANDBOX_ENV = "ACTORS_SANDBOX"
#: Folders hidden from every sandboxed process: other users' homes (the interpreter is often
#: under one, e.g. /root/.pyenv, and is bound back).
HOME_FOLDERS = ("/root", "/home", "/run/user")
#: Folders every sandboxed process gets a fresh, private, writable tmpfs on.
PRIVATE_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")
#: Size of each private tmpfs: scratch space, not storage (a role has LocalStorage for that).
PRIVATE_SIZE = "64m"

_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_NOATIME = 1024
_MS_NODIRATIME = 2048
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_RELATIME = 1 << 21
#: statvfs flags -> the mount flags a read-only remount must keep (the kernel refuses to drop
#: some of them, and dropping nosuid or noexec would loosen the mount).
_KEPT_FLAGS = {
    os.ST_NOSUID: _MS_NOSUID,
    os.ST_NODEV: _MS_NODEV,
    os.ST_NOEXEC: _MS_NOEXEC,
    os.ST_NOATIME: _MS_NOATIME,
    os.ST_NODIRATIME: _MS_NODIRATIME,
    os.ST_RELATIME: _MS_RELATIME,
}


class SandboxUnavailable(OSError):
    """This system cannot give the process a mount namespace (not Linux, not root, forbidden)."""


@dataclass(frozen=True)
class Sandbox:
    """What a sandboxed process sees of the filesystem besides its interpreter.

    Attributes:
        hide: folders covered by an empty read-only tmpfs (e.g. a state folder with secrets).
        read_only: folders bound back read-only where a hidden folder covers them (code).
        writable: folders bound back writable (the process's own data); file permissions
            still decide who may write what inside them.
    """

    hide: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()
    #: extra folders hidden beside ``hide``; the defaults hide every home folder
    homes: tuple[str, ...] = field(default=HOME_FOLDERS)

    def to_json(self) -> str:
        """The sandbox as one line of JSON (it travels in SANDBOX_ENV)."""
        return json.dumps(
            {"hide": self.hide, "read_only": self.read_only, "writable": self.writable, "homes": self.homes}
        )

    @classmethod
    def from_json(cls, text: str) -> Sandbox:
        """The sandbox ``to_json`` wrote."""
        data = json.loads(text)
        return cls(
            hide=tuple(data["hide"]),
            read_only=tuple(data["read_only"]),
            writable=tuple(data["writable"]),
            homes=tuple(data["homes"]),
        )

    def as_environ(self) -> dict[str, str]:
        """The environment variable that hands this sandbox to a child (see ``take``)."""
        return {SANDBOX_ENV: self.to_json()}

    @classmethod
    def take(cls) -> Sandbox | None:
        """The sandbox a parent handed this process (``as_environ``), removed from the
        environment so that the programs it runs do not see it; None when there is none."""
        text = os.environ.pop(SANDBOX_ENV, None)
        return cls.from_json(text) if text else None

    def needed_paths(self) -> list[str]:
        """Every folder the process must reach: its interpreter's, its code and its data."""
        return [*interpreter_paths(), *self.read_only, *self.writable]


def interpreter_paths() -> list[str]:
    """The folders this interpreter loads from: its prefixes, its site-packages and this package.

    Not every entry of the import path: it holds the working folder of whoever started the
    process tree (a home folder, say), which a sandboxed process has no business reading.
    """
    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    found.append(os.path.dirname(os.path.realpath(sys.executable)))
    found.extend(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages"))
    found.append(str(Path(__file__).resolve().parent.parent))
    seen: dict[str, None] = {}
    for path in found:
        real = os.path.realpath(path)
        if os.path.exists(real):
            seen.setdefault(real, None)
    return list(seen)


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _mount(
    libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    def enc(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {source or fstype} on {target}: {os.strerror(code)}")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _depth(path: str) -> int:
    return path.rstrip("/").count("/")


def _mount_points() -> list[str]:
    """The mount points of this namespace, from /proc/self/mountinfo (octal escapes undone)."""
    points = []
    with open("/proc/self/mountinfo", "rb") as info:
        for line in info:
            raw = line.split(b" ")[4]
            points.append(os.fsdecode(raw.decode("unicode_escape").encode("latin-1")))
    return points


def _make_read_only(libc: ctypes.CDLL, point: str) -> None:
    kept = 0
    flags = os.statvfs(point).f_flag
    for st_flag, ms_flag in _KEPT_FLAGS.items():
        if flags & st_flag:
            kept |= ms_flag
    _mount(libc, None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | kept, None)


def enter_sandbox(sandbox: Sandbox) -> None:
    """Move this process into a mount namespace of its own laid out as ``sandbox`` says.

    Must run as root, single-threaded, before dropping privileges.

    Raises:
        SandboxUnavailable: no mount namespace can be made here (the caller decides what then).
        OSError: the namespace was made but could not be laid out (a bug or a strange system).
    """
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(errno.ENOSYS, "mount namespaces are a Linux feature")
    if threading.active_count() > 1:
        # unshare would move only the calling thread; the others would keep the whole view.
        raise OSError(errno.EINVAL, "enter_sandbox must run before the process starts threads")
    libc = _libc()
    if libc.unshare(_CLONE_NEWNS) != 0:
        code = ctypes.get_errno()
        raise SandboxUnavailable(code, f"cannot make a mount namespace (unshare: {os.strerror(code)})")
    # From here on nothing we mount is seen outside, nor anything mounted outside seen here.
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE, None)
    hidden = sorted(
        {os.path.realpath(p) for p in (*sandbox.homes, *sandbox.hide) if os.path.isdir(p)}, key=_depth
    )
    private = [os.path.realpath(p) for p in PRIVATE_FOLDERS if os.path.isdir(p)]
    covers = hidden + private
    binds: dict[str, bool] = {}
    for path in [*interpreter_paths(), *sandbox.read_only]:
        real = os.path.realpath(path)
        if any(_under(real, c) for c in covers) and not any(_under(real, h) for h in sandbox.hide):
            binds.setdefault(real, False)
    for path in sandbox.writable:
        binds[os.path.realpath(path)] = True
    # A folder under another bound the same way comes with it (binds are recursive).
    binds = {
        p: w for p, w in binds.items() if not any(_under(p, q) and q != p and binds[q] == w for q in binds)
    }
    # Held open across the covering mounts: a bind from /proc/self/fd/N reaches what they hide.
    sources = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in binds if os.path.exists(path)}
    umask = os.umask(0o022)  # the folders made on the way must let the user through
    try:
        for folder in hidden:
            if any(_under(folder, h) and h != folder for h in hidden):
                continue  # already under an empty tmpfs
            _mount(libc, "tmpfs", folder, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
        for folder in private:
            _mount(libc, "tmpfs", folder, "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=1777,size={PRIVATE_SIZE}")
        for path in sorted(sources, key=_depth):
            if os.path.isdir(f"/proc/self/fd/{sources[path]}"):
                os.makedirs(path, mode=0o755, exist_ok=True)
            elif not os.path.exists(path):
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
            _mount(libc, f"/proc/self/fd/{sources[path]}", path, None, _MS_BIND | _MS_REC, None)
    finally:
        os.umask(umask)
        for fd in sources.values():
            os.close(fd)
    writable = {p for p, w in binds.items() if w} | set(private)
    _make_read_only(libc, "/")
    for point in _mount_points():
        if point in writable or point == "/":
            continue
        try:
            _make_read_only(libc, point)
        except OSError as exc:
            # A mount covered by another one cannot be reached (nor needs to be); anything
            # else left writable is still guarded by file permissions, but say so.
            if exc.errno not in (errno.ENOENT, errno.EINVAL, errno.ENOTDIR):
                print(f"sandbox: {point} stays writable: {exc}", file=sys.stderr, flush=True)
