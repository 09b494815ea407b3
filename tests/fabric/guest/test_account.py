"""A VM's account: its uid, the files handed to it, and its processes ending with the VM."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fabric.guest.account import (
    UID_FIRST,
    UID_LAST,
    NoFreeAccount,
    allocate_uid,
    end_account,
    own,
    running_uids,
)

as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="handing files and killing processes of a uid needs root"
)
#: Outside the VM range, so that no VM of a fabric running beside the tests holds it.
UID = 60999


def test_a_vm_gets_a_uid_of_the_range_that_no_other_holds() -> None:
    assert UID_FIRST <= allocate_uid(set()) <= UID_LAST
    all_but_one = set(range(UID_FIRST, UID_LAST + 1)) - {UID_FIRST + 7}
    assert allocate_uid(all_but_one) == UID_FIRST + 7
    with pytest.raises(NoFreeAccount, match="are in use"):
        allocate_uid(all_but_one | {UID_FIRST + 7})


@as_root
def test_handing_a_folder_over_never_follows_a_link_out_of_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("root's")
    storage = tmp_path / "storage"
    (storage / "nested").mkdir(parents=True)
    (storage / "nested" / "file").write_text("")
    (storage / "link").symlink_to(outside)
    (storage / "dirlink").symlink_to(tmp_path)
    own(storage, UID, 0o700)
    assert [
        (p.lstat().st_uid, p.lstat().st_gid)
        for p in (storage, storage / "nested", storage / "nested" / "file")
    ] == [(UID, UID)] * 3
    assert (outside.stat().st_uid, tmp_path.stat().st_uid) == (0, 0)
    with pytest.raises(OSError, match="symbolic link"):
        own(storage / "link", UID, 0o700)


@as_root
def test_what_runs_as_the_account_ends_with_it() -> None:
    escaped = subprocess.Popen(["sleep", "60"], user=UID, group=UID, start_new_session=True)
    try:
        assert end_account(UID) == 1
        assert escaped.wait(timeout=10) == -9
    finally:
        escaped.kill()
        escaped.wait()


@as_root
def test_a_uid_some_process_runs_as_is_not_handed_out() -> None:
    busy = UID_FIRST + 11  # as if a VM of a fabric beside ours ran as it
    running = subprocess.Popen(["sleep", "60"], user=busy, group=busy)
    try:
        assert busy in running_uids()
        assert (
            allocate_uid(set(range(UID_FIRST, UID_LAST + 1)) - {busy, busy + 1} | running_uids()) == busy + 1
        )
    finally:
        running.kill()
        running.wait()
