"""Installing the role's service certificates into the VM's certificate store folder (seed D.1:
the guest agent "installs certificates"), as ``permissionLevel`` allows the role's account:

    C/Certificates/<storeLocation>/<storeName>/<THUMBPRINT>.pem   the certificate and its chain
    C/Certificates/<storeLocation>/<storeName>/<THUMBPRINT>.key   its private key (PKCS#8 PEM)

The folders and certificates are root's and readable by the VM's account; a key is readable by
the account when permissionLevel is limitedOrElevated and by root (elevated tasks and roles)
only when it is elevated. Without a VM account (the fabric is not root) everything is the
fabric user's, owner-only. The material comes from the hosted service's certificate store
(fabric.certs), decrypted here and nowhere else. Blocking: run in a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fabric.certs import CertificateStore
from fabric.guest.disk import VmDisk
from fabric.guest.messages import GuestConfig
from roles.protocol import RoleEnvironmentData

Log = Callable[[str], None]


def _write(path: Path, data: bytes, uid: int | None, readable_by_uid: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    if uid is not None and readable_by_uid:
        os.chown(tmp, 0, uid)
        os.chmod(tmp, 0o640)
    os.replace(tmp, path)  # a role reloading its certificate never reads half a file


def install_certificates(
    config: GuestConfig, environment: RoleEnvironmentData, disk: VmDisk, log: Log
) -> None:
    """Install every certificate ``environment`` names from the hosted service's store, and
    remove those of the store folders it no longer names (a rotated thumbprint).

    Raises:
        CertificateError: a certificate is not in the store (deleted since the deployment was
            accepted) or its key does not open.
    """
    if not environment.certificates:
        return
    store = CertificateStore(config.state_dir)
    levels = {c.name: c.permission_level for c in config.role.certificates}
    uid = config.vm_uid
    wanted: dict[Path, set[str]] = {}
    for cert in environment.certificates.values():
        record = store.get(config.hosted_service, cert.thumbprint)
        key = store.key_pem(config.hosted_service, cert.thumbprint)  # raises when it is missing
        assert record is not None
        folder = Path(cert.path).parent
        folder.mkdir(parents=True, exist_ok=True)
        for level in (disk.certificates_dir, folder.parent, folder):
            if uid is not None:
                os.chown(level, 0, uid)
            os.chmod(level, 0o750 if uid is not None else 0o700)
        limited = levels.get(cert.name, "limitedOrElevated") == "limitedOrElevated"
        _write(Path(cert.path), record.certificate_pem.encode(), uid, readable_by_uid=True)
        _write(Path(cert.key_path), key, uid, readable_by_uid=limited)
        wanted.setdefault(folder, set()).add(cert.thumbprint)
        who = "the role's account" if limited else "elevated processes only"
        log(
            f"installed certificate {cert.name} ({cert.thumbprint}) in {cert.store_location}/"
            f"{cert.store_name}; its key readable by {who}"
        )
    for folder, thumbprints in wanted.items():
        for path in folder.iterdir():
            if path.suffix in (".pem", ".key") and path.stem not in thumbprints:
                path.unlink(missing_ok=True)
                log(f"removed {path.name} from {folder.parent.name}/{folder.name}: no longer configured")
