"""Capping a log in place: the newest half kept from a line's start behind one line, never
through a link or into a file with other names (the VM's account may plant either)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fabric.guest.log_caps import cap_log

pytestmark = [pytest.mark.timeout(10)]


def numbered(count: int) -> bytes:
    return b"".join(b"line %06d\n" for n in range(count))


def test_the_newest_half_stays_behind_a_line_saying_what_went(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"".join(b"line %06d\n" % n for n in range(10_000)))  # 12 bytes a line
    with open(log, "ab", buffering=0) as writer:  # a process holding it open keeps appending
        assert cap_log(log, 12_000) == 120_000 - 6_000
        writer.write(b"after\n")
    first, *lines = log.read_bytes().decode().splitlines()
    assert (
        first
        == "[114000 bytes of older output dropped here: each log is kept under role_log_max_bytes (12000)]"
    )
    assert lines[0] == "line 009500" and lines[-2:] == ["line 009999", "after"]
    assert cap_log(log, 12_000) == 0  # under the limit now


def test_a_link_or_a_second_name_is_not_written(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"x" * 5000)
    (tmp_path / "link.log").symlink_to(target)
    os.link(target, tmp_path / "hard.log")
    for name in ("link.log", "hard.log"):
        with pytest.raises(OSError):
            cap_log(tmp_path / name, 100)
    assert target.read_bytes() == b"x" * 5000
