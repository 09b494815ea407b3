"""Joined hosts in network namespaces (tests/netns.py), each a `fabric host join` process of its
own with its own state folder, against a real `fabric serve --listen` at the bridge's address;
and `fabric chaos net` on one of them: a partition really cuts it off (the controller stops
hearing it, TCP to it fails) and the host undoes it itself at its end."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
import pytest

from fabric.client import AsyncFabricClient, ClientError
from fabric.client.deployments import deploy_service
from tests.integration.test_e2e_cli import FABRIC
from tests.integration.test_e2e_join import free_port_pair
from tests.netns import NetHost, NetHosts, make_net_hosts
from tests.paths import ROOT

SPREAD = ROOT / "tests" / "fabric" / "cluster" / "services" / "spread"

__all__ = ["make_net_hosts"]  # the fixture, used by name below

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def fabric(state: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([FABRIC, *args, "--state-dir", str(state)], check=False)


async def hosts(state: Path) -> dict[str, dict[str, Any]]:
    """Every host as `fabric hosts --json` shows it (asked in-process: a CLI per poll would
    load a busy machine further)."""
    async with AsyncFabricClient(state) as client:
        return {h.name: msgspec.to_builtins(h) for h in await client.all_hosts()}


async def wait_hosts(state: Path, check: Callable[[dict[str, dict[str, Any]]], bool], seconds: float) -> None:
    """Poll the hosts until ``check`` holds."""
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
async def serving(argv: list[str], log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`fabric serve ...` writing to ``log`` (a file: a pipe nobody drains would block it), once
    it says it serves; stopped (SIGTERM, then SIGKILL) at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        with anyio.fail_after(90):
            while "fabric serving" not in log.read_text(errors="replace"):
                assert process.poll() is None, tail(log)
                await anyio.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await anyio.to_thread.run_sync(process.wait, 60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(log: Path, lines: int = 30) -> str:
    """The last lines of a log, for a failure's message."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@asynccontextmanager
async def cluster(net: NetHosts, tmp_path: Path, settings: str = "") -> AsyncIterator[Cluster]:
    """`fabric serve --listen GATEWAY:PORT`, and `fabric host join` in every namespace host."""
    state = tmp_path / "controller"
    port = free_port_pair(net.gateway)
    address = f"{net.gateway}:{port}"
    (tmp_path / "settings.toml").write_text(settings)
    serve = [FABRIC, "serve", "--fast", "--settings", str(tmp_path / "settings.toml"),
             "--listen", address, "--state-dir", str(state)]  # fmt: skip
    async with serving(serve, tmp_path / "serve.log"):
        made = await fabric(state, "token", "create", "--ttl", "10m")
        assert made.returncode == 0, made.stderr
        token = made.stdout.decode().strip()
        ca_hash = made.stderr.decode().splitlines()[-1].strip().rsplit(" ", 1)[1]
        joins = {}
        for n, host in enumerate(net):
            log = (host.state_dir / "join.log").open("wb")
            joins[host.name] = host.popen(
                [FABRIC, "host", "join", address, "--token", token, "--ca-hash", ca_hash, "--name", host.name,
                 "--fault-domain", str(n), "--cores", "4", "--state-dir", str(host.state_dir / "host")],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            await wait_hosts(
                state, lambda found: all(found.get(h.name, {}).get("connected") for h in net), 90
            )
        except (TimeoutError, OSError, ClientError) as exc:
            logs = [f"fabric serve:\n{tail(tmp_path / 'serve.log')}"]
            logs += [f"{h.name}:\n{tail(h.state_dir / 'join.log', 10)}" for h in net]
            raise AssertionError("\n".join([f"the hosts did not all connect ({exc!r})", *logs])) from None
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


async def chaos(c: Cluster, *args: str) -> tuple[int, str, str]:
    done = await fabric(c.state, "chaos", *args)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def states(state: Path) -> dict[str, str]:
    """Each joined host's state (Ready, NotReady, Dead, ...)."""
    async with AsyncFabricClient(state) as client:
        return {h.name: h.state for h in await client.all_hosts() if h.kind == "joined"}


async def ready_off(state: Path, avoid: str, seconds: float) -> None:
    """Wait until all 6 instances are ReadyRole on hosts other than ``avoid``."""
    with anyio.fail_after(seconds):
        while True:
            async with AsyncFabricClient(state) as client:
                views = await client.deployments()
            instances = views[0].instances if views else []
            if len(instances) == 6 and all(i.status == "ReadyRole" and i.host != avoid for i in instances):
                return
            await anyio.sleep(0.2)


async def test_chaos_net_on_a_joined_host_in_a_namespace(
    make_net_hosts: Callable[[int], NetHosts], tmp_path: Path
) -> None:
    net = make_net_hosts(3)
    h1, h2, h3 = net
    async with cluster(net, tmp_path, "max_hosts = 0\n") as c:
        async with AsyncFabricClient(c.state) as client:
            await deploy_service(client, SPREAD, None)
        await ready_off(c.state, "", 120)
        async with AsyncFabricClient(c.state) as client:
            on_h1 = [i for i in (await client.deployments())[0].instances if i.host == "h1"]
        assert on_h1, "placement spreads the instances over the three hosts"

        # A partition: the host drops everything but loopback; the controller stops hearing it,
        # heals its instances onto the others, and the host undoes the partition itself.
        # (Long enough for the healing to end first, on a loaded machine too: a host back sooner
        # may be given its instances again.)
        code, out, err = await chaos(c, "net", "--host", "h1", "--partition", "--duration", "15s")
        assert code == 0, err
        assert "every packet but loopback's dropped, both ways" in out and "active for 15 s" in out
        with anyio.fail_after(30):  # applied once its answer left (nft runs: slow on a loaded machine)
            while "reddog_nf_" not in h1.run("nft", "list", "tables"):
                await anyio.sleep(0.05)
        await wait_hosts(c.state, lambda f: not f["h1"]["connected"], 20)
        await ready_off(c.state, "h1", 60)
        with anyio.fail_after(30):
            while "reddog_nf_" in h1.run("nft", "list", "tables"):
                await anyio.sleep(0.2)
        await wait_hosts(c.state, lambda f: f["h1"]["connected"], 30)

        # Loss and bandwidth, ended from the controller (rollback); gone from the host after.
        code, out, err = await chaos(c, "net", "--host", "h2", "--loss", "5%", "--duration", "60s", "--json")
        assert code == 0, err
        loss_id = json.loads(out)["id"]
        code, out, err = await chaos(c, "net", "--host", "h3", "--bandwidth", "1mbit", "--duration", "60s")
        assert code == 0 and "egress limited to 1 mbit/s" in out, err
        assert "reddog_nf_" in h2.run("nft", "list", "tables") and "tbf" in h3.run("tc", "qdisc", "show")
        code, out, err = await chaos(c, "rollback", loss_id)
        assert code == 0 and "undone" in out, err
        # A delay: netem where the kernel has it, else the controller delays the host's link and
        # its instances' replies itself (and says so).
        code, out, err = await chaos(c, "net", "--host", "h1", "--delay", "100ms", "--duration", "60s")
        assert code == 0 and ("netem on" in out or "without netem" in out), (out, err)
        code, out, err = await chaos(c, "rollback")
        assert code == 0, err
        assert "reddog_nf_" not in h2.run("nft", "list", "tables") and "tbf" not in h3.run(
            "tc", "qdisc", "show"
        )

        # Refusals: one line, exit 2.
        for args, words in [
            (["--host", "nope", "--partition", "--duration", "5s"], "no live host"),
            (["--host", "h2", "--loss", "500%", "--duration", "5s"], "at most 100"),
        ]:
            code, out, err = await chaos(c, "net", *args)
            assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


SCENARIO = """
title = "a joined host cut off"
duration = 8

[load]
endpoint = "Hello/HttpIn"
rate = 10

[steady_state]
before = 2
after = 2
recovery_timeout = 90

[[steady_state.probes]]
type = "http-success-rate"
tolerance = { min = 0.5 }

[[steady_state.probes]]
type = "instances-ready"

[[method]]
name = "cut h1 off"
fault = "net"
host = "h1"
net = { partition = true }
at = 1.0
duration = 5
"""


async def test_a_scenario_partitions_a_joined_host_into_its_report_and_journal(
    make_net_hosts: Callable[[int], NetHosts], tmp_path: Path
) -> None:
    net = make_net_hosts(3)
    scenario = tmp_path / "cut.toml"
    scenario.write_text(SCENARIO)
    async with cluster(net, tmp_path, "max_hosts = 0\n") as c:
        async with AsyncFabricClient(c.state) as client:
            await deploy_service(client, SPREAD, None)
        await ready_off(c.state, "", 120)
        report, journal = tmp_path / "report.json", tmp_path / "journal.json"
        done = await fabric(c.state, "chaos", "run", str(scenario), "--seed", "5", "--quiet",
                            "--json", str(report), "--journal", str(journal))  # fmt: skip
        assert done.returncode in (0, 1), done.stderr.decode()
        [fault] = json.loads(report.read_text())["faults"]
        assert fault["kind"] == "net" and fault["outcome"] == "applied", fault
        assert fault["label"] == "cut h1 off (network of h1)"
        assert "every packet but loopback's dropped" in fault["record"]["detail"]
        assert fault["record"]["instances"] and fault["detect"] is not None
        [planned] = json.loads(journal.read_text())["schedule"]
        assert planned["inject"]["fault"] == {**planned["inject"]["fault"], "type": "net", "partition": True}
        assert "reddog_nf_" not in net[0].run("nft", "list", "tables")
