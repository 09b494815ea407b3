"""The isolation table: a dead fabric's table is replaced at start, a VM's elements come and go
with it, and a VM whose port a stale element holds still gets it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fabric.network import isolation

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="needs root and nft"),
]


def tables() -> list[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return [line.split()[-1] for line in out.splitlines() if isolation.PREFIX in line]


def ports(name: str) -> dict[str, str]:
    out = subprocess.run(
        ["nft", "-j", "list", "map", "inet", name, "ports"], capture_output=True, text=True, check=True
    ).stdout
    (item,) = [i["map"] for i in json.loads(out)["nftables"] if "map" in i]
    return {"{}/{}".format(*e[0]["concat"]): e[1]["goto"]["target"] for e in item.get("elem", [])}


def uids(name: str, chain: str) -> list[int]:
    out = subprocess.run(
        ["nft", "-j", "list", "set", "inet", name, f"u{chain}"], capture_output=True, text=True, check=True
    ).stdout
    (item,) = [i["set"] for i in json.loads(out)["nftables"] if "set" in i]
    return sorted(item.get("elem", []))


async def test_a_dead_fabrics_table_goes_and_vms_come_and_go() -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = isolation.table_name(int(dead.stdout))
    subprocess.run(["nft", "add", "table", "inet", stale], check=True)
    ours = isolation.table_name()
    try:
        assert await isolation.open_table() == ours
        assert stale not in tables() and ours in tables()

        wall, other = isolation.VmFirewall(ours), isolation.VmFirewall(ours)
        await wall.allow("A_IN_0", "dep-a", 61200, [("tcp", 20001), ("udp", 20002)])
        await other.allow("A_IN_1", "dep-a", 61201, [("tcp", 20003)])
        (chain,) = set(ports(ours).values())
        assert ports(ours) == {"tcp/20001": chain, "udp/20002": chain, "tcp/20003": chain}
        assert uids(ours, chain) == [61200, 61201]

        # A port an element still holds (its VM left without being forgotten) is taken over.
        await other.allow("B_IN_0", "dep-b", 61202, [("tcp", 20001)])
        assert ports(ours)["tcp/20001"] != chain
        await wall.forget("A_IN_0")
        assert sorted(ports(ours)) == ["tcp/20001", "tcp/20003"]  # B's port kept
        assert uids(ours, chain) == [61201]

        # A host that died left A_IN_1's uid in dep-a's set; another host gives it to dep-b.
        await isolation.VmFirewall(ours).allow("B_IN_1", "dep-b", 61201, [("tcp", 20004)])
        assert uids(ours, chain) == []
        assert uids(ours, ports(ours)["tcp/20004"]) == [61201, 61202]
    finally:
        await isolation.close_table(ours)
    assert ours not in tables()
