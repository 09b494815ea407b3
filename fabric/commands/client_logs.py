"""`fabric logs`: find a VM's log files under ``<state>/vms/<service>.<deployment>.<instance>/``
by a short name, and print or follow one.

The paths are the ones fabric/guest/disk.py's VmDisk lays out, as the seed names them. The
files are read straight from the state folder, so they can be read after the fabric is gone;
while it runs, the API says which deployment (``--service``, ``--slot``) has the instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fabric.client import ClientError, FabricClient, NoFabricRunning
from fabric.client.deployments import find_instance
from fabric.guest.log_files import ROLE_HOSTS as ROLE_HOSTS
from fabric.guest.log_files import read_log
from fabric.guest.log_files import vm_logs as vm_logs

_CHUNK = 64 * 1024


def _in_deployment(state_dir: Path, instance: str, service: str | None, slot: str | None) -> str | None:
    """The VM folder name of the instance, as the running fabric knows it; None when no fabric
    runs (or it does not know the instance) and no --slot asks for it."""
    try:
        with FabricClient(state_dir, timeout=10.0) as client:
            view = client.run(find_instance, instance, service, slot)
    except NoFabricRunning:
        if slot is not None:
            raise ClientError(
                f"--slot needs the running fabric (to tell which deployment is in {slot}); "
                f"without one, name the VM folder (`fabric logs --list` lists {state_dir / 'vms'})"
            ) from None
        return None
    except ClientError:
        if slot is not None:
            raise
        return None  # a deployment deleted since: its VM folder may still be there
    return f"{view.service}.{view.name}.{instance}"


def vm_folder(state_dir: Path, instance: str, service: str | None = None, slot: str | None = None) -> Path:
    """The VM folder of a role instance (an id such as Web_IN_0, or a VM folder name).

    Raises:
        ClientError: no such VM, or several match.
    """
    if not instance or "/" in instance or instance.strip(".") == "":
        raise ClientError(f"{instance!r} is not an instance id (Web_IN_0) or a VM folder name")
    vms = state_dir / "vms"
    exact = vms / instance
    if service is None and slot is None and exact.is_dir():
        return exact
    known = sorted(p.name for p in vms.iterdir() if p.is_dir()) if vms.is_dir() else []
    named = _in_deployment(state_dir, instance, service, slot)
    if named is not None and named in known:
        return vms / named
    # A VM folder is <service>.<deployment>.<instance> (older ones: the instance id alone).
    suffixed = [n for n in known if n == instance or n.endswith((f".{instance}", f"_{instance}"))]
    if service is not None:
        suffixed = [n for n in suffixed if n.startswith(f"{service.lower()}.")]
    if len(suffixed) == 1:
        return vms / suffixed[0]
    if len(suffixed) > 1:
        raise ClientError(
            f"several VMs match {instance!r} ({', '.join(suffixed)}); pass --service and --slot, or name one of them"
        )
    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    hint = f"VMs there: {shown}" if known else "there are no VMs there yet"
    of = f" of service {service!r}" if service is not None else ""
    raise ClientError(f"no VM named {instance!r}{of} in {vms}; {hint}")


def list_logs(
    state_dir: Path, instance: str, service: str | None = None, slot: str | None = None
) -> list[tuple[str, Path, int]]:
    """(short name, path, size in bytes) of every log of a VM."""
    out: list[tuple[str, Path, int]] = []
    for name, path in vm_logs(vm_folder(state_dir, instance, service, slot)).items():
        try:
            out.append((name, path, path.stat().st_size))
        except FileNotFoundError:
            continue  # rotated or removed since: not a log any more
    return out


def log_path(
    state_dir: Path, instance: str, which: str, service: str | None = None, slot: str | None = None
) -> Path:
    """The path of the log a VM has under short name ``which`` (case-insensitive).

    Raises:
        ClientError: no such VM, or it has no such log (yet).
    """
    vm = vm_folder(state_dir, instance, service, slot)
    found = vm_logs(vm)
    by_lower = {name.lower(): path for name, path in found.items()}
    path = by_lower.get(which.lower())
    if path is not None:
        return path
    extra = " (only full IIS web roles write it)" if which in ("WaIISHost", "IISConfigurator") else ""
    have = ", ".join(found) or "none yet"
    raise ClientError(f"{vm.name} has no {which}.log yet{extra}; its logs: {have}")


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
                try:
                    data = read_log(path, offset, _CHUNK)[0]
                except OSError as exc:  # gone, or swapped for a link by the VM's account
                    raise ClientError(f"cannot read {path.name}: {exc.strerror or exc}") from None
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
