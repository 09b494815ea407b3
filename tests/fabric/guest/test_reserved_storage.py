"""A LocalStorage resource named like one of the fabric's own folders of the VM (as Azure's
DiagnosticStore, which a definition may declare to size it) is not handed to the VM's account:
root's agents write their logs there, and the account owning the folder could swap those logs
for links to any file of the machine (root then appends to it, or hands it over)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec
import pytest

from fabric.guest.provision import disk_of, grant_account, prepare_local_storage
from fabric.guest.standalone import guest_config_for
from fabric.model import load_service
from fabric.model.definition import LocalStorage
from fabric.settings import Settings
from tests.paths import EXAMPLES

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(os.geteuid() != 0, reason="VM accounts need root")]

UID = 65003


def test_a_local_storage_named_diagnosticstore_stays_roots(tmp_path: Path) -> None:
    service = load_service(EXAMPLES / "hello-worker")
    config = guest_config_for(service, "HelloWorker", 0, tmp_path, Settings.fast())
    storage = (LocalStorage(name="DiagnosticStore", size_in_mb=10), LocalStorage(name="Data"))
    config = msgspec.structs.replace(
        config, role=msgspec.structs.replace(config.role, local_storage=storage), vm_uid=UID
    )
    disk = disk_of(config)
    disk.create()
    agents_log = disk.diagnostic_store / "WaHostBootstrapper.log"
    agents_log.parent.mkdir(parents=True, exist_ok=True)
    agents_log.write_text("root's\n")
    grant_account(config, disk, lambda line: None)
    store = disk.diagnostic_store.stat()
    assert store.st_uid == 0 and not stat.S_IMODE(store.st_mode) & 0o022, (store.st_uid, oct(store.st_mode))
    assert agents_log.stat().st_uid == 0
    assert disk.local_resource("Data").stat().st_uid == UID  # its own LocalStorage is its own
    # nor is it emptied at a role start (cleanOnRoleRecycle, the default): root's logs stay
    (disk.local_resource("Data") / "mine").write_text("x")
    prepare_local_storage(config, disk, lambda line: None, clean=True)
    assert agents_log.read_text() == "root's\n"
    assert not (disk.local_resource("Data") / "mine").exists()
