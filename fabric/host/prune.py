"""What a joined host removes once its VMs no longer use it: packages (fabric.host.packages) and
the hosted services' certificates it was sent (its own store), each only once it was not
shipped or asked for ``package_prune_after`` seconds (a VM may be about to boot from it)."""

from __future__ import annotations

import time
from pathlib import Path

from fabric.certs.store import STORE_DIR


def prune_certificates(state_dir: Path, keep: set[tuple[str, str]], older_than: float) -> list[str]:
    """Remove the stored certificates no VM here uses (``keep``: (service, THUMBPRINT), the
    service lower-cased) that were not written for ``older_than`` seconds; a service folder
    left empty goes too. Returns ``service/THUMBPRINT`` of each removed."""
    root = state_dir / STORE_DIR
    if not root.is_dir():
        return []
    now = time.time()
    removed = []
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for path in folder.glob("sha1-*.json"):
            thumbprint = path.name.removeprefix("sha1-").removesuffix(".json")
            try:
                if (folder.name, thumbprint) not in keep and now - path.stat().st_mtime > older_than:
                    path.unlink()
                    removed.append(f"{folder.name}/{thumbprint}")
            except FileNotFoundError:
                continue
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed
