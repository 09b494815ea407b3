"""Dropping root for a child: run as an unprivileged user, keeping only read access if needed.

A "limited" role must not run as root. When the interpreter lives where that user cannot read
(``/root/.pyenv``, a common place for it), the process keeps exactly one capability,
CAP_DAC_READ_SEARCH, so it can still load Python and its libraries: it stays unable to write
anything it does not own, signal other users' processes or bind privileged ports.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import stat
import sys
from pathlib import Path

_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_CAP_DAC_READ_SEARCH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(OSError):
    """The process cannot switch to the requested user."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def resolve_user(user: str | int) -> tuple[int, int]:
    """(uid, gid) of a user name or uid. Raises PrivilegeError naming an unknown user."""
    try:
        entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no such user {user!r}: create it, or choose another limited user") from None
    return entry.pw_uid, entry.pw_gid


def readable_by_others(path: str | os.PathLike[str]) -> bool:
    """Whether a user who is neither owner nor in the group can reach and read ``path``."""
    target = Path(path).resolve()
    for folder in [*reversed(target.parents)]:
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(target).st_mode & stat.S_IROTH)


def drop_privileges(user: str | int) -> None:
    """Become ``user`` for good; keep CAP_DAC_READ_SEARCH only if our interpreter needs it.

    Must run as root. Afterwards the real, effective and saved uids are the user's, and the
    capability (when kept) is ambient, so programs this process starts keep it too.
    """
    uid, gid = resolve_user(user)
    if os.geteuid() != 0:
        if os.geteuid() == uid:
            return
        raise PrivilegeError(f"cannot become {user!r}: only root can switch users")
    keep_read = not readable_by_others(sys.executable) or not readable_by_others(os.__file__)
    libc = ctypes.CDLL(None, use_errno=True)
    if keep_read and libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise PrivilegeError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS) failed")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if not keep_read:
        return
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    mask = 1 << _CAP_DAC_READ_SEARCH
    data = (_CapData * 2)(_CapData(mask, mask, mask), _CapData(0, 0, 0))
    if libc.capset(ctypes.byref(header), data) != 0:
        raise PrivilegeError(ctypes.get_errno(), "capset(CAP_DAC_READ_SEARCH) failed")
    if libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_DAC_READ_SEARCH, 0, 0) != 0:
        raise PrivilegeError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_RAISE) failed")


def main() -> None:
    """``python -m actors._privileges USER -- COMMAND...``: exec COMMAND as USER (see above)."""
    args = sys.argv[1:]
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m actors._privileges USER -- COMMAND [ARG...]", file=sys.stderr)
        sys.exit(2)
    try:
        drop_privileges(args[0])
    except PrivilegeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    os.execvp(args[2], args[2:])


if __name__ == "__main__":
    main()
