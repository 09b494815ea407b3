"""The VM accounts (uids) of one machine, chosen by the host agent that runs the VMs there, as it
chooses their ports: the controller cannot see another machine's processes.

A host gives a VM a uid of its range that no process of the machine runs as and no other VM of
any host agent on the machine holds, keeps it for the VM's life on the host (reboots, role host
restarts, upgrades) and reports it with every status. What a VM holds is machine-wide: a lock
file per uid under ACCOUNTS_DIR, held (``flock``) by the host agent process while the VM is
there, so two host agents of one machine (local hosts, another fabric's) never give the same uid
and a host agent that dies lets go of its VMs' uids. The file names its last holder (the host's
state folder and the VM): a restarted host agent takes its VM's uid back though what
escaped the VM still runs as it (ended before the VM boots again), as does another host of the
same fabric the VM is placed on after a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path

from fabric.guest.account import UID_FIRST, UID_LAST, NoFreeAccount, running_uids

#: where each uid's lock file lives (machine-wide; root's)
ACCOUNTS_DIR = Path(os.environ.get("REDDOG_ACCOUNTS_DIR", "/run/reddog/accounts"))


class HostAccounts:
    """The uids the VMs of one host agent hold (blocking calls: run them in a worker thread).

    Args:
        owner: who holds them: the state folder its VMs live in (with the VM, a lock file's tag).
        uids: the first and last uid of the host's range (inclusive; None: the whole VM range).
        folder: the lock files' folder.
    """

    def __init__(self, owner: str, uids: tuple[int, int] | None = None, folder: Path | None = None) -> None:
        self.owner = owner
        self.first, self.last = uids or (UID_FIRST, UID_LAST)
        self.folder = folder or ACCOUNTS_DIR
        #: instance id -> (uid, the open lock file holding it)
        self.held: dict[str, tuple[int, int]] = {}

    def uid_of(self, instance_id: str) -> int | None:
        """The uid an instance holds here, or None."""
        held = self.held.get(instance_id)
        return held[0] if held else None

    def choose(self, instance_id: str, proposed: int | None) -> int:
        """The instance's uid: the one it holds; else ``proposed`` (the controller's record)
        when it is free here; else a free one of the range, from a random place on (as
        systemd's DynamicUser picks one).

        Raises:
            NoFreeAccount: every uid of the range is held or in use.
        """
        if instance_id in self.held:
            return self.held[instance_id][0]
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tag = f"{self.owner}\n{instance_id}\n".encode()
        running = running_uids()
        size = self.last - self.first + 1
        start = secrets.randbelow(size)
        order = [self.first + (start + step) % size for step in range(size)]
        if proposed is not None and self.first <= proposed <= self.last:
            order.insert(0, proposed)
        for uid in order:
            fd = self._lock(uid)
            if fd is None:
                continue  # another VM of this machine holds it
            last = os.pread(fd, 4096, 0)
            if uid in running and last != tag:
                os.close(fd)  # a process of this machine runs as it (not what escaped this VM)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, tag, 0)
            self.held[instance_id] = (uid, fd)
            return uid
        raise NoFreeAccount(
            f"all {size} VM accounts of this host ({self.first}-{self.last}) are in use; delete a deployment"
        )

    def release(self, instance_id: str) -> None:
        """The instance left the host: its uid is free for others (nothing runs as it now)."""
        held = self.held.pop(instance_id, None)
        if held is not None:
            os.close(held[1])

    def _lock(self, uid: int) -> int | None:
        fd = os.open(self.folder / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return fd
