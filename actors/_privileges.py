"""Dropping root for a child: run as an unprivileged user with no capability left.

A "limited" process must not be root, nor keep any capability that bypasses file permissions.
When its interpreter lives where that user cannot read (``/root/.pyenv``, a common place for
it), it is given a mount namespace of its own in which the interpreter is bound back read-only
(see _sandbox); where no namespace can be made and the user cannot read what it needs, it is
refused with a reason naming the path to make readable.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import stat
import sys

from ._sandbox import Sandbox, SandboxUnavailable, enter_sandbox, interpreter_paths

_PR_SET_DUMPABLE = 4
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


class PrivilegeError(OSError):
    """The process cannot switch to the requested user, or could only with too much access."""


def resolve_user(user: str | int) -> tuple[int, int]:
    """(uid, gid) of a user name, or of a bare uid (its group is the same number, as for a
    dynamic user with no account entry). Raises PrivilegeError naming an unknown user."""
    if isinstance(user, int):
        return user, user
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no such user {user!r}: create it, or choose another limited user") from None
    return entry.pw_uid, entry.pw_gid


def unreachable_by(paths: list[str], uid: int, gid: int) -> str | None:
    """The first of ``paths`` (or a folder above one) that ``uid``/``gid`` cannot reach and read,
    or None when it can read them all."""
    for path in paths:
        real = os.path.realpath(path)
        for folder in [*reversed(_parents(real)), real]:
            try:
                info = os.stat(folder)
            except OSError:
                break  # not there: nothing to read
            need = stat.S_IXOTH if folder != real or stat.S_ISDIR(info.st_mode) else 0
            need |= stat.S_IROTH if folder == real else 0
            if info.st_uid == uid:
                bits = (info.st_mode >> 6) & 7
            elif info.st_gid == gid:
                bits = (info.st_mode >> 3) & 7
            else:
                bits = info.st_mode & 7
            if bits & need != need:
                return folder
    return None


def _parents(path: str) -> list[str]:
    found = []
    while (parent := os.path.dirname(path)) != path:
        found.append(parent)
        path = parent
    return found


def _isolate(sandbox: Sandbox, uid: int, gid: int) -> None:
    """Enter ``sandbox``; where no namespace can be made, go on only if the user can read
    everything it needs anyway (file permissions still keep other users' files from it)."""
    try:
        enter_sandbox(sandbox)
    except SandboxUnavailable as exc:
        blocked = unreachable_by(sandbox.needed_paths(), uid, gid)
        if blocked is not None:
            raise PrivilegeError(
                f"cannot run limited code as uid {uid}: {exc.strerror}, and uid {uid} cannot read "
                f"{blocked}; make it readable (chmod o+rx on it and each folder above it) or allow "
                "mount namespaces"
            ) from None
        print(
            f"warning: limited code runs without a private filesystem view: {exc.strerror}", file=sys.stderr
        )


def drop_privileges(user: str | int, sandbox: Sandbox | None = None) -> None:
    """Become ``user`` for good, with no capability and no way to gain one (no_new_privs).

    As root, the process first enters ``sandbox`` (its own view of the filesystem), or, without
    one, checks that ``user`` can read the interpreter. Not as root, it must already be ``user``.

    Raises:
        PrivilegeError: not root and not ``user``; or ``user`` could not load Python (the
            message names the path to make readable); or a capability survived the switch.
    """
    uid, gid = resolve_user(user)
    if os.geteuid() != 0:
        if os.geteuid() == uid:
            return
        raise PrivilegeError(f"cannot become {user!r}: only root can switch users")
    if sandbox is not None:
        _isolate(sandbox, uid, gid)
    else:
        blocked = unreachable_by(interpreter_paths(), uid, gid)
        if blocked is not None:
            raise PrivilegeError(
                f"cannot run as uid {uid}: it cannot read {blocked}, where Python loads from; make it "
                "readable (chmod o+rx on it and each folder above it) or run the child in a sandbox"
            )
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # with KEEPCAPS off, this clears every capability set
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise PrivilegeError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    # The switch made us undumpable (root-owned /proc/self); we hold nothing root's any more.
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    left = capabilities()
    if any(left.values()):
        raise PrivilegeError(f"capabilities survived the switch to uid {uid}: {left}")


def capabilities() -> dict[str, int]:
    """This process's inheritable, permitted, effective and ambient capability sets, as numbers."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
                found[name] = int(value.strip(), 16)
    return found


def main() -> None:
    """``python -m actors._privileges USER -- COMMAND...``: exec COMMAND as USER (see above);
    the sandbox, if any, comes in the ACTORS_SANDBOX environment variable."""
    args = sys.argv[1:]
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m actors._privileges USER -- COMMAND [ARG...]", file=sys.stderr)
        sys.exit(2)
    try:
        drop_privileges(int(args[0]) if args[0].isdigit() else args[0], Sandbox.take())
    except PrivilegeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    os.execvp(args[2], args[2:])


if __name__ == "__main__":
    main()
