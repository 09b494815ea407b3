"""A VM's user account (seed D.2: the guest agent "sets up the SID for the user account that the
role will run under"): a uid of its own, the folders it may read and write, and the private view
of the filesystem its limited processes get.

Each VM runs its limited startup tasks, its role host and its web workers under a uid drawn from
the range systemd gives its dynamic users (61184-65519), with no account entry: the group is the
same number. Elevated tasks and elevated roles stay root, as in Azure. The VM's folder is
``root:<uid> 0750``, so only root and the VM's account can enter it; inside, the agents' logs and
the configuration stay root's (readable, not writable), while LocalStorage, the role's temp
folder and the role's own logs belong to the account alone. Its limited processes see the
fabric's state folder hidden except for their own VM's folder, home folders hidden (the
interpreter bound back), private ``/tmp``, and the rest of the filesystem read-only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from pathlib import Path

import fabric
import roles
from actors import Sandbox
from fabric.guest.disk import VmDisk

#: The uids VMs' accounts are drawn from: systemd's range for dynamic users.
UID_FIRST = 61184
UID_LAST = 65519


class NoFreeAccount(RuntimeError):
    """Every uid of the VM range is taken."""


def allocate_uid(taken: set[int]) -> int:
    """A uid of the VM range that is not in ``taken``, from a random place on (as systemd's
    DynamicUser picks one): two fabrics on one machine, each with its own store, seldom pick
    the same, even for VMs of the same name.

    Raises:
        NoFreeAccount: the range is full.
    """
    size = UID_LAST - UID_FIRST + 1
    start = secrets.randbelow(size)
    for step in range(size):
        uid = UID_FIRST + (start + step) % size
        if uid not in taken:
            return uid
    raise NoFreeAccount(f"all {size} VM accounts ({UID_FIRST}-{UID_LAST}) are in use; delete a deployment")


def running_uids() -> set[int]:
    """The uids of the VM range that processes on this machine run as now: a fabric beside ours
    (with a store of its own) may hold them, and ending a VM ends every process of its uid.
    Cheap: one stat per process."""
    found = set()
    for pid in _pids():
        with contextlib.suppress(OSError):  # gone meanwhile
            uid = os.stat(f"/proc/{pid}").st_uid
            if UID_FIRST <= uid <= UID_LAST:
                found.add(uid)
    return found


def default_uid() -> int | None:
    """The account of a VM booted without a controller, or None when we are not root: then
    everything runs as us, without isolation."""
    return allocate_uid(running_uids()) if os.geteuid() == 0 else None


def proposed_uid() -> int | None:
    """A uid for the controller to propose to a host that chooses for itself (see
    fabric.host.accounts): any of the range when we are root, None (no account) when not. It
    does not look at this machine's processes: the host checks its own, in a worker thread,
    and a walk of /proc here would run on the controller's event loop for every new VM."""
    return allocate_uid(set()) if os.geteuid() == 0 else None


def code_roots() -> list[str]:
    """The folders the fabric's own packages are imported from (bound back for role hosts)."""
    return sorted({str(Path(p.__file__ or "").resolve().parents[1]) for p in (fabric, roles)})


def vm_sandbox(disk: VmDisk, state_dir: str) -> Sandbox:
    """What a VM's limited processes see: the state folder hidden but for their VM's folder."""
    hide = (state_dir,) if state_dir else (str(disk.root.parent),)
    return Sandbox(hide=hide, read_only=tuple(code_roots()), writable=(str(disk.root),))


def role_temp_env(disk: VmDisk) -> dict[str, str]:
    """TEMP, TMP and TMPDIR pointing at the role's temp folder (RoleTemp, as Azure sets them)."""
    temp = str(disk.role_temp)
    return {"TEMP": temp, "TMP": temp, "TMPDIR": temp}


def own(path: Path, uid: int, mode: int) -> None:
    """Make ``path`` (and, for a folder, everything in it) the account's alone.

    ``path`` must sit in a folder the account cannot write. What is inside may be the account's
    already, and it may swap a folder for a symlink while we walk: the walk goes by file
    descriptors and never follows a link, so root never changes a file outside ``path``.
    """
    if path.is_symlink():
        raise OSError(f"{path} is a symbolic link; refusing to hand it to uid {uid}")
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    if path.is_dir():
        for _, dirnames, filenames, folder in os.fwalk(path, follow_symlinks=False):
            for name in dirnames + filenames:
                os.chown(name, uid, uid, dir_fd=folder, follow_symlinks=False)


def secure_vm(disk: VmDisk, uid: int, writable: list[Path]) -> None:
    """Lay out who may do what on the VM's disk (blocking; as root).

    The VM folder: root and the account may enter and read it, nobody else. ``writable`` (its
    LocalStorage, temp folder and log folders): the account's alone. The rest stays root's.
    """
    os.chown(disk.root, 0, uid)
    os.chmod(disk.root, 0o750)
    for folder in writable:
        folder.mkdir(parents=True, exist_ok=True)
        own(folder, uid, 0o700)


def end_account(uid: int, rounds: int = 10) -> int:
    """SIGKILL every process running as ``uid`` (one that left the VM's process group dies with
    the VM too); returns how many were killed. Blocking: it reads /proc."""
    killed: set[int] = set()
    for _ in range(rounds):  # again, for any it forked meanwhile
        found = [pid for pid in _pids() if pid not in killed and uid in _live_uids(pid)]
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
    return len(killed)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _live_uids(pid: int) -> set[int]:
    """The real, effective, saved and file-system uids of a running process (none for a zombie
    or a process gone meanwhile)."""
    uids: set[int] = set()
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                    return set()
                if line.startswith("Uid:"):
                    uids = {int(value) for value in line.split()[1:]}
    except OSError:
        return set()  # gone meanwhile
    return uids
