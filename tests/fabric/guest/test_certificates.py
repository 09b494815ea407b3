"""The guest agent installs the role's uploaded certificates into the VM's certificate store
folder, readable by the VM's account as permissionLevel allows, and RoleEnvironment names them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec
import pytest

from fabric.certs import CertificateError, CertificateStore
from fabric.guest.certificates import install_certificates
from fabric.guest.messages import GuestConfig
from fabric.guest.provision import disk_of
from fabric.guest.standalone import guest_config_for
from fabric.model.service import load_service
from fabric.settings import Settings
from roles import RoleEnvironment
from tests.fabric.certs.cert_kit import leaf, make_ca, service_with_certificate

UID = 65003


def vm_config(tmp_path: Path, thumbprint: str, permission: str = "limitedOrElevated") -> GuestConfig:
    service = load_service(service_with_certificate(tmp_path / "hello", thumbprint))
    config = guest_config_for(service, "Hello", 0, tmp_path / "state", Settings.fast())
    role = config.role
    role = msgspec.structs.replace(
        role,
        certificates=tuple(
            msgspec.structs.replace(c, permission_level=permission) for c in role.certificates
        ),
    )
    uid = UID if os.geteuid() == 0 else None
    config = msgspec.structs.replace(config, role=role, vm_uid=uid, hosted_service="hello")
    disk_of(config).create()
    return config


@pytest.mark.parametrize("permission", ["limitedOrElevated", "elevated"])
def test_the_certificate_and_key_land_in_the_store_folder_as_permission_level_allows(
    tmp_path: Path, permission: str
) -> None:
    made = leaf(make_ca(), "www.hello.test")
    CertificateStore(tmp_path / "state").add("hello", made)
    config = vm_config(tmp_path, made.thumbprint, permission)
    lines: list[str] = []
    install_certificates(config, config.environment, disk_of(config), lines.append)

    info = config.environment.certificates["Ssl"]
    assert (info.thumbprint, info.store_location, info.store_name) == (made.thumbprint, "LocalMachine", "My")
    assert Path(info.path).read_text() == made.certificate_pem()
    assert Path(info.key_path).read_bytes() == made.key_pem()
    assert Path(info.path).parent == disk_of(config).certificates_dir / "LocalMachine" / "My"
    cert, key = Path(info.path).stat(), Path(info.key_path).stat()
    if config.vm_uid is None:
        assert stat.S_IMODE(cert.st_mode) == stat.S_IMODE(key.st_mode) == 0o600
    else:
        assert (cert.st_uid, cert.st_gid, stat.S_IMODE(cert.st_mode)) == (0, UID, 0o640)
        expected = (0, UID, 0o640) if permission == "limitedOrElevated" else (0, 0, 0o600)
        assert (key.st_uid, key.st_gid, stat.S_IMODE(key.st_mode)) == expected
        folder = Path(info.path).parent
        for level in (folder, folder.parent, folder.parent.parent):
            assert (level.stat().st_gid, stat.S_IMODE(level.stat().st_mode)) == (UID, 0o750)
    assert f"installed certificate Ssl ({made.thumbprint})" in lines[0]


def test_a_rotated_thumbprint_replaces_the_old_files(tmp_path: Path) -> None:
    ca = make_ca()
    old, new = leaf(ca, "www.hello.test"), leaf(ca, "www.hello.test")
    store = CertificateStore(tmp_path / "state")
    store.add("hello", old)
    store.add("hello", new)
    config = vm_config(tmp_path, old.thumbprint)
    install_certificates(config, config.environment, disk_of(config), lambda _: None)
    rotated = vm_config(tmp_path / "next", new.thumbprint).environment
    folder = Path(config.environment.certificates["Ssl"].path).parent
    rotated = msgspec.structs.replace(
        rotated,
        certificates={
            "Ssl": msgspec.structs.replace(
                rotated.certificates["Ssl"],
                path=str(folder / f"{new.thumbprint}.pem"),
                key_path=str(folder / f"{new.thumbprint}.key"),
            )
        },
    )
    install_certificates(config, rotated, disk_of(config), lambda _: None)
    assert sorted(p.name for p in folder.iterdir()) == [f"{new.thumbprint}.key", f"{new.thumbprint}.pem"]


def test_a_certificate_deleted_from_the_store_fails_the_install_naming_it(tmp_path: Path) -> None:
    config = vm_config(tmp_path, "AB" * 20)
    with pytest.raises(
        CertificateError, match=f"certificate sha1-{'AB' * 20} is not uploaded to hosted service 'hello'"
    ):
        install_certificates(config, config.environment, disk_of(config), lambda _: None)


def test_role_environment_names_the_certificates(tmp_path: Path) -> None:
    config = vm_config(tmp_path, "CD" * 20)
    RoleEnvironment._attach(config.environment, None)
    try:
        found = RoleEnvironment.get_certificate("Ssl")
        assert found.thumbprint == "CD" * 20 and found.key_path.endswith(f"{'CD' * 20}.key")
        with pytest.raises(Exception, match="no certificate named 'Nope'; known certificates: Ssl"):
            RoleEnvironment.get_certificate("Nope")
    finally:
        RoleEnvironment._detach()
