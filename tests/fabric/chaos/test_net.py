"""`fabric chaos net`: a user's values (one-line errors, exit 2 / 4xx), refused on a local host,
and the controller's path to a real host agent in a namespace host (the fault applied there,
undone from the controller, held once per host and kind)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from actors import Ref
from fabric.chaos.net import network_fault, parse_percent, parse_rate, parse_seconds
from fabric.cli import main
from fabric.client import ClientError
from fabric.controller.chaos.faults import World
from fabric.controller.chaos.messages import Inject, NetworkFault, Target
from fabric.controller.chaos.net import net_fault
from fabric.controller.hosts import HostUnavailable
from fabric.controller.messages import ControllerError
from tests.fabric.chaos.chaos_kit import guestbook
from tests.fabric.host.test_net_faults import agent_in, host, reachable, start_server
from tests.netns import NetHost, make_net_hosts

__all__ = ["host", "make_net_hosts"]  # fixtures, used by name below

pytestmark = pytest.mark.timeout(60)


def test_values_as_a_user_writes_them() -> None:
    assert parse_seconds("30s") == 30 and parse_seconds("100ms") == 0.1 and parse_seconds("2m") == 120
    assert parse_percent("5%") == 5 and parse_percent("0.5") == 0.5
    assert parse_rate("1mbit") == 1_000_000 and parse_rate("500kbit") == 500_000
    fault = network_fault(Target(host="h"), delay="100ms", jitter="20ms", duration="30s")
    assert (fault.delay, fault.jitter, fault.duration) == (0.1, 0.02, 30)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--loss", "500%", "--duration", "30s"], "at most 100"),
        (["--loss", "5%"], "give --duration"),
        (["--bandwidth", "1mbps", "--duration", "30s"], "as tc does"),
        (["--bandwidth", "1bit", "--duration", "30s"], "between 8kbit"),
        (["--partition", "--loss", "5%", "--duration", "30s"], "exactly one"),
        (["--duration", "30s"], "exactly one"),
        (["--partition", "--duration", "3 days"], "30s, 100ms"),
        (["--partition", "--duration", "100000s"], "at most 86400"),
        (["--delay", "2m", "--duration", "30s"], "at most 60"),
        (["--partition", "--jitter", "20ms", "--duration", "30s"], "--jitter goes with --delay"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(tmp_path: Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(main, ["chaos", "net", "--host", "h1", *args, "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.output


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_local_host_is_refused_and_bad_values_are_4xx_on_the_api(tmp_path: Path) -> None:
    async with guestbook(tmp_path / "state") as book:
        host_id = (await book.targets()).hosts[0].id
        command = [sys.executable, "-m", "fabric.cli", "chaos", "net", "--host", host_id, "--partition",
                   "--duration", "30s", "--state-dir", str(book.state_dir)]  # fmt: skip
        done = await anyio.run_process(command, check=False)
        err = done.stderr.decode()
        assert done.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert "fabric's own machine" in err and "fabric chaos partition" in err
        async with book.client() as client:
            with pytest.raises(ClientError) as caught:
                await client.inject(
                    Inject(fault=NetworkFault(target=Target(host=host_id), loss=500, duration=30))
                )
            assert 400 <= caught.value.status < 500
            assert all(r.kind != "net" for r in await client.faults())  # nothing was applied


@dataclass
class HostsStandIn:
    """The controller's host pool as net faults see it: one joined host, its agent's Ref."""

    ref: Ref
    hosts: dict[str, Any] = field(default_factory=dict)
    #: the host cut off from the controller (as by a partition): asks fail
    cut: bool = False

    def __post_init__(self) -> None:
        self.hosts["far-1"] = SimpleNamespace(id="far-1", alive=True, joined=True)

    def live(self) -> list[Any]:
        return list(self.hosts.values())

    async def ask(self, host_id: str, message: Any, timeout: float) -> Any:
        if self.cut:
            raise HostUnavailable(f"host {host_id} went away: its link is down")
        return await self.ref.ask(message, timeout=timeout)


async def test_the_controller_applies_a_partition_through_the_host_agent_and_undoes_it(
    host: NetHost,
) -> None:
    port = start_server(host)
    async with agent_in(host) as agent:
        state = SimpleNamespace(hosts=HostsStandIn(agent.ref), deployments={}, pool="p", find=lambda *a: None)
        world = World(state=state, controller=agent.ref)  # type: ignore[arg-type]
        fault = network_fault(Target(host="far-1"), partition=True, duration="60s")
        applied = await net_fault(world, fault)
        assert "both ways" in applied.detail and applied.undo is not None
        with anyio.fail_after(30):  # applied once its answer left (nft runs: slow on a loaded machine)
            while not agent.nft_tables():
                await anyio.sleep(0.05)
        assert not await reachable(host.address, port)
        with pytest.raises(ControllerError) as again:
            await net_fault(world, fault)
        assert again.value.status == 409 and "already in force" in again.value.message
        with pytest.raises(ControllerError) as unknown:
            await net_fault(world, network_fault(Target(host="nope"), partition=True, duration="1s"))
        assert unknown.value.status == 404 and "far-1" in unknown.value.message
        assert "undone" in await applied.undo()
        assert await reachable(host.address, port, 2) and agent.nft_tables() == []
        # (a delay the host refuses for want of netem is done otherwise: tests/fabric/cluster/test_net_delay.py)


NET_SCENARIO = """
title = "network faults"
duration = 30

[[method]]
fault = "net"
host = "far-1"
net = { loss = "5%" }
every = 10.0
jitter = 2.0
duration = 4

[[method]]
name = "cut off"
fault = "net"
roles = ["Web"]
net = { partition = true }
rate = 0.1
duration = 3
"""


def test_a_scenarios_net_faults_follow_the_seed_and_go_into_the_journal(tmp_path: Path) -> None:
    from fabric.chaos.journal import Journal, read_journal, write_journal
    from fabric.chaos.schedule import Topology, plan
    from tests.fabric.chaos.chaos_kit import scenario

    s, topo = scenario(NET_SCENARIO), Topology.of({"Web": 2, "Worker": 1})
    first, again, other = plan(s, 7, topo), plan(s, 7, topo), plan(s, 8, topo)
    assert first == again and first != other
    faults = [p.inject.fault for p in first]
    assert all(isinstance(f, NetworkFault) for f in faults)
    loss = [f for f in faults if f.loss]
    assert len(loss) == 3 and all(f.loss == 5 and f.duration == 4 and f.target.host == "far-1" for f in loss)
    cut = [p for p in first if p.inject.fault.partition]  # type: ignore[union-attr]
    assert cut and all(p.inject.fault.target.instance.startswith("Web_IN_") for p in cut)  # type: ignore[union-attr]
    assert all(p.inject.label.startswith("cut off (network of the host of Web_IN_") for p in cut)
    journal = Journal(scenario_file="s.toml", scenario=s, seed=7, duration=30, schedule=first, topology=topo)
    write_journal(tmp_path / "j.json", journal)
    assert read_journal(tmp_path / "j.json").schedule == first


@pytest.mark.parametrize(
    ("net", "words"),
    [
        ('{ loss = "5%", partition = true }', "exactly one of net.partition, net.loss"),
        ('{ bandwidth = "fast" }', "bandwidth 'fast': write a rate as tc does"),
        ("{ }", "exactly one"),
        ('{ delay = "100ms", jitter = "1h" }', "jitter '1h': above 0 and at most 60 s"),
    ],
)
def test_a_scenarios_bad_net_fault_is_one_line(net: str, words: str) -> None:
    from fabric.chaos.scenario import ScenarioError
    from tests.fabric.chaos.chaos_kit import scenario

    text = f'title = "t"\n[[method]]\nfault = "net"\nhost = "h"\nnet = {net}\n'
    with pytest.raises(ScenarioError) as caught:
        scenario(text)
    assert words in str(caught.value) and "\n" not in str(caught.value), caught.value


async def test_a_fault_the_controller_cannot_clear_is_undone_by_the_host_at_its_end(host: NetHost) -> None:
    async with agent_in(host) as agent:
        hosts = HostsStandIn(agent.ref)
        state = SimpleNamespace(hosts=hosts, deployments={}, pool="p", find=lambda *a: None)
        world = World(state=state, controller=agent.ref)  # type: ignore[arg-type]
        applied = await net_fault(world, network_fault(Target(host="far-1"), loss="20%", duration="1s"))
        assert applied.undo is not None and agent.nft_tables()
        hosts.cut = True
        said = await applied.undo()
        assert "not cleared from here" in said and "the host undoes it itself" in said
        with anyio.fail_after(30):
            while agent.nft_tables():
                await anyio.sleep(0.05)
