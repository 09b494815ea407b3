"""Test hosts in network namespaces: each a namespace with a veth pair to a bridge in the root
namespace, addresses from the benchmarking range 198.18.0.0/15 (RFC 2544).

``net_hosts(3, folder)`` (a context manager, for tests and benchmarks) or the ``make_net_hosts``
fixture gives hosts h1, h2, h3 at 198.18.0.11, .12, .13 behind a bridge at 198.18.0.1/24 (the
next free /24 when another run holds that one). Every name carries this process's pid, and the
bridge's alias says it too, so parallel runs never collide and a run that died is swept by the
next one. Teardown (in a finally) kills every process in each namespace and deletes the
namespaces (their veths go with them) and the bridge. Needs root and iproute2; otherwise the
tests skip with a one-line reason, or (``make_test_hosts``) run on loopback hosts instead:
127.0.0.2, 127.0.0.3, ... of this machine's own network stack.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: the range the hosts' networks come from, one /24 per set of hosts
RANGE = ipaddress.ip_network("198.18.0.0/15")
PREFIX = "reddog"
#: the alias of every bridge we make: "reddog-netns <pid>" (read back by the sweep)
ALIAS = f"{PREFIX}-netns"
LOCK = Path(tempfile.gettempdir()) / f"{PREFIX}-netns.lock"
_sets = itertools.count(1)


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no iproute2, or the kernel refused)."""


def why_unavailable() -> str | None:
    """One line saying why namespace hosts cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespace hosts need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "network namespace hosts need iproute2's `ip` (apt-get install iproute2)"
    return None


def require_netns() -> None:
    """Skip the calling test when namespace hosts cannot run here."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (bounded: 10 s)."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and done.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


@dataclass
class NetHost:
    """One test host: a namespace, its address, the root side of its veth, a state folder."""

    name: str
    netns: str
    address: str
    veth: str
    state_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace (as it is, for a loopback host)."""
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def popen(
        self, argv: Sequence[str], env: dict[str, str] | None = None, **kwargs: object
    ) -> subprocess.Popen[bytes]:
        """Start a process in this host (cwd: its state folder); killed at teardown if still up."""
        kwargs.setdefault("cwd", self.state_dir)
        proc: subprocess.Popen[bytes] = subprocess.Popen(self.command(argv), env=env, **kwargs)  # type: ignore[call-overload]
        self.processes.append(proc)
        return proc

    def run(self, *argv: str, check: bool = True) -> str:
        """Run a short command in this host and answer its output (bounded: 10 s)."""
        done = subprocess.run(self.command(argv), capture_output=True, text=True, timeout=10, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.name}: {done.stderr.strip()}")
        return done.stdout

    def python(self) -> str:
        """An interpreter that runs inside this host (for ProcessOptions(python=...): a process
        actor spawned with it lives in the namespace, linked to its parent as usual)."""
        if not self.netns:
            return sys.executable
        wrapper = self.state_dir / "python"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {self.netns} {sys.executable} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)

    def set_link(self, up: bool) -> None:
        """Unplug (or plug back) this host's cable: its veth's root side down (up).

        Raises:
            NetnsUnavailable: a loopback host has no link of its own.
        """
        if not self.netns:
            raise NetnsUnavailable(f"{self.name} is a loopback host ({self.address}): it has no link to cut")
        ip("link", "set", self.veth, "up" if up else "down")

    def pids(self) -> list[int]:
        """Every process in this host's namespace (a loopback host: those it started)."""
        if not self.netns:
            return [p.pid for p in self.processes if p.poll() is None]
        out = ip("netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in out.split()]


@dataclass
class NetHosts:
    """A set of test hosts behind one bridge."""

    bridge: str
    gateway: str
    network: str
    hosts: list[NetHost]
    #: each host in a namespace of its own (False: loopback hosts, one network stack)
    isolated: bool = True

    def __iter__(self) -> Iterator[NetHost]:
        return iter(self.hosts)

    def __getitem__(self, i: int) -> NetHost:
        return self.hosts[i]

    def __len__(self) -> int:
        return len(self.hosts)


@contextlib.contextmanager
def net_hosts(count: int, state_root: Path) -> Iterator[NetHosts]:
    """Make ``count`` namespace hosts (1..50), each with a state folder under ``state_root``;
    everything is removed at the end, also when the body raises.

    Raises:
        NetnsUnavailable: not root, no iproute2, or the kernel refused a namespace.
    """
    if not 1 <= count <= 50:
        raise ValueError(f"count {count}: between 1 and 50 hosts")
    reason = why_unavailable()
    if reason is not None:
        raise NetnsUnavailable(reason)
    sweep()
    tag = f"{os.getpid()}{next(_sets)}"
    bridge = f"rdb{tag}"
    made: list[NetHost] = []
    try:
        with _locked():
            network = _free_network()
            gateway = str(network.network_address + 1)
            ip("link", "add", bridge, "type", "bridge")
            ip("link", "set", bridge, "alias", f"{ALIAS} {os.getpid()}")
            ip("addr", "add", f"{gateway}/{network.prefixlen}", "dev", bridge)
        ip("link", "set", bridge, "up")
        for i in range(1, count + 1):
            host = NetHost(
                name=f"h{i}",
                netns=f"{PREFIX}-{os.getpid()}-{tag}-h{i}",
                address=str(network.network_address + 10 + i),
                veth=f"rdv{tag}h{i}",
                state_dir=state_root / f"h{i}",
            )
            host.state_dir.mkdir(parents=True, exist_ok=True)
            made.append(host)
            _make_host(host, bridge, network.prefixlen, gateway)
        yield NetHosts(bridge=bridge, gateway=gateway, network=str(network), hosts=made)
    finally:
        for host in made:
            _kill(host.processes)
            # The pair goes at once (a namespace's devices are freed later, in the background).
            ip("link", "del", host.veth, check=False)
            _remove_netns(host.netns)
        ip("link", "del", bridge, check=False)


@contextlib.contextmanager
def loopback_hosts(count: int, state_root: Path) -> Iterator[NetHosts]:
    """Hosts without root: processes of this machine on 127.0.0.2, 127.0.0.3, ... (no link to
    cut, no network faults); what they started is killed at the end."""
    if not 1 <= count <= 50:
        raise ValueError(f"count {count}: between 1 and 50 hosts")
    made = []
    for i in range(1, count + 1):
        host = NetHost(
            name=f"h{i}", netns="", address=f"127.0.0.{i + 1}", veth="", state_dir=state_root / f"h{i}"
        )
        host.state_dir.mkdir(parents=True, exist_ok=True)
        made.append(host)
    try:
        yield NetHosts(bridge="lo", gateway="127.0.0.1", network="127.0.0.0/8", hosts=made, isolated=False)
    finally:
        for host in made:
            _kill(host.processes)


def _kill(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def _make_host(host: NetHost, bridge: str, prefixlen: int, gateway: str) -> None:
    ip("netns", "add", host.netns)
    ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    ip("link", "set", host.veth, "master", bridge, "up")
    ns = ("-n", host.netns)
    ip(*ns, "addr", "add", f"{host.address}/{prefixlen}", "dev", "eth0")
    ip(*ns, "link", "set", "eth0", "up")
    ip(*ns, "link", "set", "lo", "up")
    ip(*ns, "route", "add", "default", "via", gateway)


def _remove_netns(netns: str) -> None:
    """Kill what runs in the namespace, then delete it (its veth pair goes with it)."""
    for pid in ip("netns", "pids", netns, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", netns, check=False)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Choosing a network and taking it is one step across concurrent runs."""
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_network() -> ipaddress.IPv4Network:
    """The first /24 of 198.18.0.0/15 that no interface of the root namespace sits in."""
    used = []
    for link in json.loads(ip("-j", "addr", "show").stdout or "[]"):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                used.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network)
    for net in RANGE.subnets(new_prefix=24):
        if not any(net.overlaps(u) for u in used):
            return net  # type: ignore[return-value]
    raise NetnsUnavailable("every /24 of 198.18.0.0/15 is in use by other runs")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> list[str]:
    """Remove the namespaces and bridges of runs whose process is gone; answer their names."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) == 4 and parts[0] == PREFIX and parts[1].isdigit() and not _alive(int(parts[1])):
            _remove_netns(name)
            removed.append(name)
    for link in json.loads(ip("-j", "link", "show", "type", "bridge", check=False).stdout or "[]"):
        alias = str(link.get("ifalias", ""))
        owner = alias.removeprefix(f"{ALIAS} ")
        if alias.startswith(f"{ALIAS} ") and owner.isdigit() and not _alive(int(owner)):
            ip("link", "del", link["ifname"], check=False)
            removed.append(link["ifname"])
    return removed


def leftovers() -> list[str]:
    """Namespaces and bridges of this process still present (empty after every teardown)."""
    pid = str(os.getpid())
    names = [
        line.split()[0]
        for line in ip("netns", "list", check=False).stdout.splitlines()
        if line.startswith(f"{PREFIX}-{pid}-")
    ]
    for link in json.loads(ip("-j", "link", "show", check=False).stdout or "[]"):
        if link.get("ifalias") == f"{ALIAS} {pid}" or str(link.get("ifname", "")).startswith(f"rdv{pid}"):
            names.append(link["ifname"])
    return names


@pytest.fixture
def make_net_hosts(tmp_path: Path) -> Iterator[Callable[[int], NetHosts]]:
    """``make_net_hosts(n)`` -> NetHosts (skips when namespaces cannot be made); removed after."""
    require_netns()
    sets = itertools.count(1)
    with contextlib.ExitStack() as stack:

        def make(count: int) -> NetHosts:
            try:
                return stack.enter_context(net_hosts(count, tmp_path / f"net{next(sets)}"))
            except NetnsUnavailable as exc:
                pytest.skip(f"network namespaces unavailable: {exc}")

        yield make


@pytest.fixture
def make_test_hosts(tmp_path: Path) -> Iterator[Callable[[int], NetHosts]]:
    """``make_test_hosts(n)``: namespace hosts where they can be made (root), else loopback
    hosts (``isolated`` False: no link to cut, no network faults); removed after."""
    sets = itertools.count(1)
    with contextlib.ExitStack() as stack:

        def make(count: int) -> NetHosts:
            folder = tmp_path / f"hosts{next(sets)}"
            if why_unavailable() is None:
                with contextlib.suppress(NetnsUnavailable):
                    return stack.enter_context(net_hosts(count, folder))
            return stack.enter_context(loopback_hosts(count, folder))

        yield make
