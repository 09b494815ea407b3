"""A VM's logs kept under ``role_log_max_bytes`` each: a limited role writes some of them (its
stdout and stderr, its role host log, its startup tasks' and W3SVC's), as much as it likes.

The guest agent looks every few seconds; a log over the limit keeps its newest half (from a
line's start) behind a line saying how much older output was dropped. The file is rewritten in
place, never replaced: the processes writing it hold it open for appending (O_APPEND), and their
next writes land after the kept part. What a process appends in the instant between the copy and
the truncation is lost with the older part.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from fabric.guest.log_files import vm_logs

#: seconds between two looks at most (the diagnostics interval when it is shorter)
CHECK_EVERY = 5.0


def cap_log(path: Path, limit: int) -> int:
    """Drop the older part of the log at ``path`` when it is over ``limit`` bytes; returns the
    bytes dropped (0: under the limit). Never through a link, nor a file with other names (the
    VM's account may have planted one where it writes).

    Raises:
        OSError: no such file, a link, not a regular file, or a file with several links.
    """
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OSError(errno.EINVAL, f"{path.name} is not a regular file of one name")
        if info.st_size <= limit:
            return 0
        # The newest half, from a line's start, moved to the front in chunks (each read ahead
        # of where it is written: no chunk overwrites what is still to be read).
        src = info.st_size - limit // 2
        cut = os.pread(fd, 4096, src - 1).find(b"\n")  # from the byte before: src may start a line
        if cut >= 0:
            src += cut
        line = (
            f"[{src} bytes of older output dropped here: each log is kept under "
            f"role_log_max_bytes ({limit})]\n"
        ).encode()
        dropped, end = src, info.st_size + limit  # a writer racing on is not chased for ever
        dst = os.pwrite(fd, line, 0)
        while src < end and (chunk := os.pread(fd, min(1 << 20, end - src), src)):
            dst += os.pwrite(fd, chunk, dst)
            src += len(chunk)
        os.ftruncate(fd, dst)
        return dropped
    finally:
        os.close(fd)


def cap_vm_logs(vm_root: Path, limit: int) -> list[str]:
    """Cap every log of a VM (blocking); one line for each that was cut."""
    said = []
    for name, path in vm_logs(vm_root).items():
        try:
            dropped = cap_log(path, limit)
        except OSError:
            continue  # gone, or swapped for something else meanwhile
        if dropped:
            said.append(
                f"log {name} ({path.name}) was over {limit} bytes: its older {dropped} bytes were dropped"
            )
    return said
