"""A VM's log files by short name, where fabric/guest/disk.py's VmDisk lays them out (as the seed
names them): what `fabric logs` and the portal's instance view read."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: the role host processes: each writes <name>.log, and its stdout and stderr to <name>.out.log
ROLE_HOSTS = ("WaWorkerHost", "WaIISHost", "WaWebHost")


def _newest(paths: list[Path]) -> Path:
    return max(paths, key=lambda p: p.stat().st_mtime)


def vm_logs(vm: Path) -> dict[str, Path]:
    """Every log of a VM by its short name: WaAppAgent, AppAgentRuntime, Guest.out,
    WaHostBootstrapper(.out), the role host's log (WaWorkerHost...) and ``stdout`` (its stdout
    and stderr), IISConfigurator, StartupTask<n>, W3SVC (today's access log), and any other
    ``*.log`` the role writes into its resources folder. Where the VM has run several
    deployments, the newest file wins."""
    found: dict[str, list[Path]] = {}

    def add(name: str, path: Path) -> None:
        # Only a regular file: the VM's account may plant a symbolic link (to any file root
        # reads) or a FIFO (a read that never ends) where it writes.
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                found.setdefault(name, []).append(path)
        except OSError:
            pass  # gone meanwhile

    logs = vm / "C" / "Logs"
    for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        add(path.name.removesuffix(".log"), path)
    directory = vm / "C" / "Resources" / "Directory"
    for folder in sorted(directory.iterdir()) if directory.is_dir() else []:
        if folder.name.endswith(".DiagnosticStore"):
            for path in folder.glob("*.log"):
                add(path.name.removesuffix(".log"), path)
            for path in (folder / "StartupTasks").glob("*.log"):
                add(f"StartupTask{path.stem}", path)
            for path in (folder / "LogFiles").glob("W3SVC*/*.log"):
                add("W3SVC", path)
        elif folder.is_dir():
            for path in folder.glob("*.log"):
                name = path.name.removesuffix(".log")
                add(name, path)
                if name.removesuffix(".out") in ROLE_HOSTS and name.endswith(".out"):
                    add("stdout", path)
    return {name: _newest(paths) for name, paths in sorted(found.items())}


def read_log(path: Path, offset: int, count: int) -> tuple[bytes, int]:
    """Up to ``count`` bytes of a log from ``offset`` (from its start when it is shorter now),
    and its size (blocking). Never through a symbolic link nor from anything but a regular file:
    the VM's account may have swapped the log for one since it was listed.

    Raises:
        OSError: no such file, a link, or not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
        return os.pread(fd, count, offset if offset <= info.st_size else 0), info.st_size
    finally:
        os.close(fd)
