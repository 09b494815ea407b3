"""Network faults as a real host agent applies them inside a test host's namespace: each acts
(a partition cuts TCP off, loss drops near its share, tbf caps a transfer near its rate), and
each is gone afterwards (no nft table, no qdisc), whether cleared, timed out, or its host agent
stopped or killed. The netem form skips with its reason where the kernel has no netem."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec
import pytest

from actors import ActorError, ProcessOptions, Ref, open_system
from fabric.host.net_faults import NetFault, NetFaultApplied, NetFaultRefused, NetFaults
from fabric.settings import Settings
from tests.fabric.host.host_stand_ins import ControllerStandIn, SpawnHost, host_config
from tests.netns import NetHost, NetHosts, make_net_hosts

__all__ = ["make_net_hosts"]  # the fixture, used by name below

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

SETTINGS = Settings.fast(host_heartbeat_interval=0.5)

#: a TCP server that answers each connection with "up", and prints its port
TCP_SERVER = """
import socket
import subprocess
s = socket.create_server(("0.0.0.0", 0))
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"up")
    c.close()
"""


@dataclass
class Agent:
    """A real host agent process inside a namespace host, with its recording parent."""

    host: NetHost
    ref: Ref

    async def fault(self, **fields: object) -> NetFaultApplied:
        """Ask for a NetFault (its fields checked as the wire would check them)."""
        fields.setdefault("id", "f1")
        return await self.ref.ask(msgspec.convert(fields, NetFault), timeout=15)

    def nft_tables(self) -> list[str]:
        return self.host.run("nft", "list", "tables").split()

    def qdiscs(self) -> list[str]:
        return [q["kind"] for q in json.loads(self.host.run("tc", "-j", "qdisc", "show", "dev", "eth0"))]


@asynccontextmanager
async def agent_in(host: NetHost) -> AsyncIterator[Agent]:
    """Spawn a HostAgent process inside ``host``'s namespace, as the controller spawns one."""
    config = host_config(host.state_dir, SETTINGS)
    async with open_system() as system:
        parent = await system.spawn(ControllerStandIn, name="controller")
        options = ProcessOptions(python=host.python(), log_path=host.state_dir / "host.out.log")
        ref = await parent.ask(SpawnHost(config=config, options=options))
        yield Agent(host, ref)


@pytest.fixture
def host(make_net_hosts: Callable[[int], NetHosts]) -> NetHost:
    """One namespace host, with nftables and tc at hand."""
    for tool in ("nft", "tc"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in ("/usr/sbin", "/sbin", "/usr/bin")):
            pytest.skip(f"`{tool}` is not installed (apt-get install nftables iproute2)")
    return make_net_hosts(1)[0]


def start_server(host: NetHost) -> int:
    proc = host.popen([sys.executable, "-c", TCP_SERVER], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return int(proc.stdout.readline())


async def reachable(address: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connect to address:port is answered within ``timeout``."""
    with anyio.move_on_after(timeout):
        try:
            async with await anyio.connect_tcp(address, port) as s:
                return await s.receive() == b"up"
        except OSError:
            return False
    return False


async def until(check: Callable[[], bool], seconds: float) -> None:
    """Poll ``check`` until it holds, within ``seconds``."""
    with anyio.fail_after(seconds):
        while not check():
            await anyio.sleep(0.05)


async def test_a_partition_cuts_tcp_off_until_cleared_and_leaves_nothing(host: NetHost) -> None:
    port = start_server(host)
    async with agent_in(host) as agent:
        assert await reachable(host.address, port)
        applied = await agent.fault(action="partition", duration=60)
        assert "both ways" in applied.detail
        await until(lambda: agent.nft_tables() != [], 3)  # applied once its answer left
        assert not await reachable(host.address, port)
        # the host's own loopback still works
        assert "up" in host.run(
            sys.executable,
            "-c",
            f"import socket; print(socket.create_connection(('127.0.0.1', {port}), 2).recv(2).decode())",
        )
        assert agent.nft_tables() == ["table", "inet", "reddog_nf_f1"]
        cleared = await agent.fault(action="clear", id="f1")
        assert "f1 (partition)" in cleared.detail
        assert await reachable(host.address, port, 2)
        assert agent.nft_tables() == []


async def test_a_partition_ends_by_itself_at_its_duration(host: NetHost) -> None:
    port = start_server(host)
    async with agent_in(host) as agent:
        await agent.fault(action="partition", duration=1.0)
        await until(lambda: agent.nft_tables() != [], 3)
        assert not await reachable(host.address, port)
        await until(lambda: agent.nft_tables() == [], 5)
        assert await reachable(host.address, port, 2)


async def test_a_fault_is_undone_when_its_host_agent_stops(host: NetHost) -> None:
    async with agent_in(host) as agent:
        await agent.fault(action="partition", duration=600)
        await agent.fault(action="bandwidth", id="f2", rate=1_000_000, duration=600)
        await until(lambda: agent.nft_tables() != [], 3)
        assert "tbf" in agent.qdiscs()
    assert agent.nft_tables() == [] and "tbf" not in agent.qdiscs()


async def test_a_killed_host_agents_fault_is_undone_by_its_backstop(host: NetHost) -> None:
    async with agent_in(host) as agent:
        await agent.fault(action="partition", duration=0.5)
        await until(lambda: agent.nft_tables() != [], 3)
        assert agent.ref.pid is not None
        os.kill(agent.ref.pid, signal.SIGKILL)  # no timer left in the host agent
        await until(lambda: agent.nft_tables() == [], 8)


def _udp_receiver(bind: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: no drops of our own
    s.bind((bind, 0))
    return s


#: sends N datagrams to argv[1]:argv[2], paced so that no socket buffer overflows (a datagram
#: dropped on its way out fails with EPERM)
UDP_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    try:
        s.sendto(b"x" * 32, (sys.argv[1], int(sys.argv[2])))
    except PermissionError:
        pass
    if i % 200 == 199:
        time.sleep(0.005)
"""

#: counts the datagrams it gets until 2 s pass without one, prints the count
UDP_COUNTER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
s.bind(("0.0.0.0", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(3)
n = 0
s.recv(100); n = 1
s.settimeout(2)
try:
    while True:
        s.recv(100); n += 1
except socket.timeout:
    print(n, flush=True)
"""


async def test_loss_drops_near_its_share_each_way(host: NetHost) -> None:
    count, share = 3000, 0.30
    async with agent_in(host) as agent:
        applied = await agent.fault(action="loss", percent=30, duration=60)
        assert "30% of packets dropped each way" in applied.detail
        # into the host: a counter inside it
        counter = host.popen([sys.executable, "-c", UDP_COUNTER], stdout=subprocess.PIPE)
        assert counter.stdout is not None
        port = int(counter.stdout.readline())
        sender = await anyio.run_process(
            [sys.executable, "-c", UDP_SENDER, host.address, str(port), str(count)]
        )
        assert sender.returncode == 0
        got_in = int(await anyio.to_thread.run_sync(counter.stdout.readline))
        # out of the host: a receiver in the root namespace, at the bridge's address
        hosts_gateway = host.address.rsplit(".", 1)[0] + ".1"
        receiver = _udp_receiver(hosts_gateway)
        with receiver:
            rport = receiver.getsockname()[1]
            await anyio.to_thread.run_sync(
                lambda: host.run(sys.executable, "-c", UDP_SENDER, hosts_gateway, str(rport), str(count))
            )
            receiver.setblocking(False)
            got_out = 0
            while True:
                try:
                    receiver.recv(100)
                except BlockingIOError:
                    break
                got_out += 1
        await agent.fault(action="clear", id="")
        assert agent.nft_tables() == []
    for got in (got_in, got_out):
        # 3000 draws at 30%: one standard deviation is 0.84 points; allow 4
        assert abs((1 - got / count) - share) < 0.04, (got_in, got_out)


#: connects to argv[1]:argv[2] and sends argv[3] bytes
TCP_SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
s.sendall(b"x" * int(sys.argv[3]))
s.close()
"""


async def _transfer_rate(host: NetHost, size: int) -> float:
    """Bits per second of one TCP transfer of ``size`` bytes out of ``host`` into the root
    namespace, from its first byte to its last."""
    gateway = host.address.rsplit(".", 1)[0] + ".1"
    listener = await anyio.create_tcp_listener(local_host=gateway, local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    sender = host.popen([sys.executable, "-c", TCP_SENDER, gateway, str(port), str(size)])
    async with listener:
        conn = await listener.listeners[0].accept()
        async with conn:
            received = len(await conn.receive())
            start = anyio.current_time()
            with anyio.fail_after(30):
                while received < size:
                    received += len(await conn.receive())
            elapsed = anyio.current_time() - start
    await anyio.to_thread.run_sync(sender.wait)
    return size * 8 / elapsed


async def test_bandwidth_caps_a_transfer_near_its_rate_and_is_gone_after(host: NetHost) -> None:
    rate = 8_000_000
    async with agent_in(host) as agent:
        raw = await _transfer_rate(host, 2_000_000)
        applied = await agent.fault(action="bandwidth", rate=rate, duration=60)
        assert "egress limited to 8 mbit/s" in applied.detail and "tbf" in agent.qdiscs()
        capped = await _transfer_rate(host, 2_000_000)
        await agent.fault(action="clear", id="f1")
        assert "tbf" not in agent.qdiscs()
    print(f"tbf 8 Mbit/s: {capped / 1e6:.2f} Mbit/s; without: {raw / 1e6:.0f} Mbit/s")
    assert 0.6 * rate < capped < 1.15 * rate
    assert raw > 5 * rate


def netem_missing(host: NetHost) -> str | None:
    """Why this kernel cannot delay with netem (None: it can)."""
    probe = host.run("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False)
    del probe
    kinds = host.run("tc", "qdisc", "show", "dev", "lo")
    if "netem" not in kinds:
        return "this kernel has no netem qdisc (sch_netem): delay faults are refused here"
    host.run("tc", "qdisc", "del", "dev", "lo", "root")
    return None


async def test_without_netem_a_delay_is_refused_with_its_reason(host: NetHost) -> None:
    if netem_missing(host) is None:
        pytest.skip("this kernel has netem: test_a_delay_with_netem covers it")
    async with agent_in(host) as agent:
        with pytest.raises(ActorError) as caught:
            await agent.fault(action="delay", delay=0.1, jitter=0.02, duration=60)
        refused = caught.value.caused_by(NetFaultRefused)
        assert refused is not None and "\n" not in str(refused)
        assert "no netem" in str(refused) and "fabric chaos link --delay" in str(refused)
        assert "netem" not in agent.qdiscs()


def test_a_delay_with_netem(host: NetHost) -> None:
    """(A plain test that runs its loop itself: pytest-trio loses an async test's skip reason.)"""
    reason = netem_missing(host)
    if reason is not None:
        pytest.skip(reason)

    async def body() -> None:
        port = start_server(host)
        async with agent_in(host) as agent:
            await agent.fault(action="delay", delay=0.2, duration=60)
            assert "netem" in agent.qdiscs()
            start = anyio.current_time()
            assert await reachable(host.address, port, 3)
            assert anyio.current_time() - start >= 0.2
            await agent.fault(action="clear", id="f1")
            assert "netem" not in agent.qdiscs()

    anyio.run(body, backend="trio")


async def test_refusals_are_one_line_and_change_nothing(host: NetHost) -> None:
    async with agent_in(host) as agent:
        await agent.fault(action="bandwidth", rate=1_000_000, duration=60)
        for fields, words in [
            ({"id": "f1", "action": "partition"}, "already in force"),
            ({"id": "f2", "action": "bandwidth", "rate": 2_000_000}, "one qdisc at a time"),
            ({"id": "f3", "action": "loss", "percent": 0}, "above 0"),
            ({"id": "f4", "action": "bandwidth", "rate": 100}, "at least 8kbit"),
        ]:
            with pytest.raises(ActorError) as caught:
                await agent.fault(**fields, duration=60)
            refused = caught.value.caused_by(NetFaultRefused)
            assert refused is not None and words in str(refused) and "\n" not in str(refused)
        assert agent.nft_tables() == [] and agent.qdiscs() == ["tbf"]
        with pytest.raises(msgspec.ValidationError):
            await agent.fault(action="loss", percent=250, duration=60)
        with pytest.raises(msgspec.ValidationError):
            await agent.fault(action="partition", duration=10**9)


@pytest.mark.parametrize(
    ("action", "tool"), [("partition", "nftables"), ("loss", "nftables"), ("bandwidth", "iproute2")]
)
async def test_a_missing_tool_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str, tool: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nft, tc nor ip here
    faults = NetFaults(start_soon=lambda *args: None)
    fault = msgspec.convert({"id": "f1", "action": action, "percent": 5, "rate": 10**6}, NetFault)
    with pytest.raises(NetFaultRefused, match=f"is not installed on this host \\(apt-get install {tool}\\)"):
        await faults.handle(fault)
    assert faults.active == {}
