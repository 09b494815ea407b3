"""`fabric logs`: find a VM's log file under ``<state>/vms/<instance>/`` and print or follow it.

The paths are the ones fabric/guest/disk.py's VmDisk lays out, as the seed names them. The
files are read straight from the state folder, so they can be read after the fabric is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fabric.frontend.client import ClientError

#: --file choices: the seed's log files
LOG_FILES = ("WaAppAgent", "AppAgentRuntime", "WaHostBootstrapper", "WaIISHost", "IISConfigurator")

_CHUNK = 64 * 1024


def _vm_folder(state_dir: Path, instance: str) -> Path:
    vms = state_dir / "vms"
    exact = vms / instance
    if exact.is_dir():
        return exact
    known = sorted(p.name for p in vms.iterdir() if p.is_dir()) if vms.is_dir() else []
    # A VM folder may carry a deployment prefix when several deployments share a host.
    suffixed = [name for name in known if name.endswith((f".{instance}", f"_{instance}"))]
    if len(suffixed) == 1:
        return vms / suffixed[0]
    if len(suffixed) > 1:
        raise ClientError(f"several VMs match {instance!r} ({', '.join(suffixed)}); name one of them")
    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    hint = f"VMs there: {shown}" if known else "there are no VMs there yet"
    raise ClientError(f"no VM named {instance!r} in {vms}; {hint}")


def log_path(state_dir: Path, instance: str, which: str) -> Path:
    """The path of log ``which`` (one of LOG_FILES) of a VM.

    Raises:
        ClientError: no such VM, or the log's folder does not exist yet.
    """
    vm = _vm_folder(state_dir, instance)
    if which in ("WaAppAgent", "AppAgentRuntime"):
        return vm / "C" / "Logs" / f"{which}.log"
    directory = vm / "C" / "Resources" / "Directory"
    pattern = f"*.DiagnosticStore/{which}.log" if which == "WaHostBootstrapper" else f"*/{which}.log"
    # One folder per deployment id the VM has run: the newest log is the current one.
    found = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime) if directory.is_dir() else []
    if not found:
        extra = " (only full IIS web roles write it)" if which in ("WaIISHost", "IISConfigurator") else ""
        raise ClientError(f"{vm.name} has no {which}.log yet{extra}")
    return found[-1]


def follow_log(
    path: Path,
    *,
    follow: bool,
    echo: Callable[[str], None],
    interval: float = 0.2,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Print a log file; with ``follow``, keep printing what is appended until Ctrl-C.

    A file that shrinks (a reimaged VM starts a new log) is read again from its start; a file
    that does not exist yet is waited for when following.

    Raises:
        ClientError: the file does not exist and we are not following.
    """
    if not follow and not path.is_file():
        raise ClientError(f"{path} does not exist yet")
    offset = 0
    pending = b""
    try:
        while True:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = -1
            if 0 <= size < offset:
                offset, pending = 0, b""
            if size > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read(_CHUNK)
                offset += len(data)
                pending += data
                # Print whole lines only, so a line being written is not split in two.
                cut = pending.rfind(b"\n") + 1
                if cut:
                    echo(pending[:cut].decode("utf-8", errors="replace"))
                    pending = pending[cut:]
                continue
            if not follow:
                if pending:
                    echo(pending.decode("utf-8", errors="replace"))
                return
            if not keep_going():
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
