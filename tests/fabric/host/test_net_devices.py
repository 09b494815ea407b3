"""The interfaces a joined host's delay or bandwidth fault shapes: every link that is up but
loopback, read from `ip -j link show up`, which prints ``{}`` for each link it filters out."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.host.net_faults import _devices

# What iproute2 6.x printed on a machine with two ifb devices down (they were a 500 there).
IP_OUTPUT = '[{"ifindex":1,"ifname":"lo","link_type":"loopback"},{},{},{"ifindex":4,"ifname":"eth0","link_type":"ether"},{"ifname":"veth1@if5","link_type":"ether"}]'


@pytest.mark.timeout(20)
async def test_links_the_up_filter_left_out_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ip = tmp_path / "ip"
    ip.write_text(f"#!/bin/sh\ncat <<'END'\n{IP_OUTPUT}\nEND\n")
    ip.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert await _devices() == ["eth0"]
