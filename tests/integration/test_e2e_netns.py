"""Joined hosts in network namespaces (tests/netns.py), each a `fabric host join` process of its
own with its own state folder, against a real `fabric serve --listen` at the bridge's address;
and `fabric chaos net` on one of them: a partition really cuts it off (the controller stops
hearing it, TCP to it fails) and the host undoes it itself at its end."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from tests.integration.test_e2e_cli import FABRIC, Output
from tests.integration.test_e2e_join import free_port_pair, running
from tests.netns import NetHost, NetHosts, make_net_hosts

__all__ = ["make_net_hosts"]  # the fixture, used by name below

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def fabric(state: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([FABRIC, *args, "--state-dir", str(state)], check=False)


async def hosts(state: Path) -> dict[str, dict[str, Any]]:
    result = await fabric(state, "hosts", "--json")
    assert result.returncode == 0, result.stderr
    return {h["name"]: h for h in map(json.loads, result.stdout.decode().splitlines())}


async def wait_hosts(state: Path, check: Callable[[dict[str, dict[str, Any]]], bool], seconds: float) -> None:
    """Poll `fabric hosts` until ``check`` holds."""
    with anyio.fail_after(seconds):
        while not check(await hosts(state)):
            await anyio.sleep(0.2)


@dataclass
class Cluster:
    """A controller in the root namespace and joined hosts in namespaces."""

    state: Path
    address: str
    net: NetHosts
    joins: dict[str, subprocess.Popen[bytes]]


@asynccontextmanager
async def cluster(net: NetHosts, tmp_path: Path, settings: str = "") -> AsyncIterator[Cluster]:
    """`fabric serve --listen GATEWAY:PORT`, and `fabric host join` in every namespace host."""
    state = tmp_path / "controller"
    port = free_port_pair(net.gateway)
    address = f"{net.gateway}:{port}"
    (tmp_path / "settings.toml").write_text(settings)
    serve = [FABRIC, "serve", "--fast", "--settings", str(tmp_path / "settings.toml"),
             "--listen", address, "--state-dir", str(state)]  # fmt: skip
    async with running(serve) as controller:
        await Output(controller).wait_for("fabric serving")
        made = await fabric(state, "token", "create", "--ttl", "10m")
        assert made.returncode == 0, made.stderr
        token = made.stdout.decode().strip()
        ca_hash = made.stderr.decode().splitlines()[-1].strip().rsplit(" ", 1)[1]
        joins = {}
        for host in net:
            log = (host.state_dir / "join.log").open("wb")
            joins[host.name] = host.popen(
                [FABRIC, "host", "join", address, "--token", token, "--ca-hash", ca_hash,
                 "--name", host.name, "--state-dir", str(host.state_dir / "host")],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        await wait_hosts(state, lambda found: all(found.get(h.name, {}).get("connected") for h in net), 60)
        yield Cluster(state, address, net, joins)


async def test_hosts_in_namespaces_join_and_one_cut_off_by_its_link_is_heard_again(
    make_net_hosts: Callable[[int], NetHosts], tmp_path: Path
) -> None:
    net = make_net_hosts(3)
    async with cluster(net, tmp_path) as c:
        found = await hosts(c.state)
        assert {found[h.name]["address"] for h in net} == {h.address for h in net}
        h1: NetHost = net[0]
        h1.set_link(False)
        await wait_hosts(c.state, lambda f: not f["h1"]["connected"], 60)
        h1.set_link(True)
        await wait_hosts(c.state, lambda f: f["h1"]["connected"], 60)
