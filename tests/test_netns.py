"""The namespace hosts of tests/netns.py: reachable at their addresses, cut off when their link
is down, and gone (namespaces, veths, bridge, processes) afterwards, also when a test fails."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netns import (
    NetHost,
    NetHosts,
    NetnsUnavailable,
    ip,
    leftovers,
    loopback_hosts,
    make_net_hosts,
    make_test_hosts,
    net_hosts,
    require_netns,
    sweep,
    why_unavailable,
)

__all__ = ["make_net_hosts", "make_test_hosts"]  # fixtures, used by name below

pytestmark = pytest.mark.timeout(60)

#: a TCP server that answers each connection with the host's name, and says where it listens
SERVER = """
import socket, sys
s = socket.create_server(("0.0.0.0", 0))
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[1].encode())
    c.close()
"""


def serve(host: NetHost) -> int:
    """Start SERVER in ``host``; answer its port once it listens."""
    proc = host.popen([sys.executable, "-c", SERVER, host.name], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def fetch(address: str, port: int, timeout: float = 2.0) -> str:
    """What the server at address:port says (raises OSError when it cannot be reached)."""
    with socket.create_connection((address, port), timeout=timeout) as s:
        return s.recv(100).decode()


def test_a_server_in_a_namespace_is_reached_at_its_address_and_nothing_is_left(
    make_net_hosts: Callable[[int], NetHosts],
) -> None:
    hosts = make_net_hosts(2)
    h1, h2 = hosts
    assert hosts.gateway == "198.18.0.1" or hosts.gateway.startswith("198.1")
    assert h1.address.endswith(".11") and h2.address.endswith(".12")
    port = serve(h1)
    assert fetch(h1.address, port) == "h1"
    # host to host through the bridge, and not at the root namespace's loopback
    assert (
        h2.run(
            sys.executable,
            "-c",
            f"import socket; print(socket.create_connection(('{h1.address}', {port}), 2).recv(9).decode())",
        ).strip()
        == "h1"
    )
    with pytest.raises(OSError):
        fetch("127.0.0.1", port, 0.5)
    # each host has its own loopback, up
    assert "UP" in h1.run("ip", "-o", "link", "show", "lo")


def test_link_down_cuts_a_host_off_and_up_brings_it_back(make_net_hosts: Callable[[int], NetHosts]) -> None:
    (h1,) = make_net_hosts(1)
    port = serve(h1)
    h1.set_link(False)
    with pytest.raises(OSError):
        fetch(h1.address, port, 0.5)
    h1.set_link(True)
    assert fetch(h1.address, port) == "h1"


def test_everything_is_removed_when_the_body_raises(tmp_path: Path) -> None:
    require_netns()
    with pytest.raises(RuntimeError, match="boom"), net_hosts(2, tmp_path) as hosts:
        serve(hosts[0])
        server = hosts[0].processes[0]
        # a process the test did not start itself, inside the namespace, goes too
        orphan = subprocess.Popen(hosts[1].command(["sleep", "300"]))
        raise RuntimeError("boom")
    assert leftovers() == []
    assert server.poll() is not None
    assert orphan.wait(5) is not None


def test_two_sets_at_once_get_separate_networks(make_net_hosts: Callable[[int], NetHosts]) -> None:
    a, b = make_net_hosts(1), make_net_hosts(1)
    assert a.network != b.network and a[0].netns != b[0].netns
    port = serve(b[0])
    assert fetch(b[0].address, port) == "h1"


def test_a_dead_runs_namespace_and_bridge_are_swept() -> None:
    require_netns()
    dead = subprocess.Popen(["true"])
    dead.wait()
    netns, bridge = f"reddog-{dead.pid}-{dead.pid}1-h1", f"rdb{dead.pid}9"
    ip("netns", "add", netns)
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("link", "set", bridge, "alias", f"reddog-netns {dead.pid}")
        assert set(sweep()) >= {netns, bridge}
        assert netns not in ip("netns", "list").stdout
        assert ip("link", "show", bridge, check=False).returncode != 0
    finally:
        ip("netns", "del", netns, check=False)
        ip("link", "del", bridge, check=False)


def test_loopback_hosts_stand_in_without_root(tmp_path: Path) -> None:
    with loopback_hosts(2, tmp_path) as hosts:
        assert not hosts.isolated and [h.address for h in hosts] == ["127.0.0.2", "127.0.0.3"]
        port = serve(hosts[1])
        assert fetch("127.0.0.3", port) == "h2"
        with pytest.raises(NetnsUnavailable, match="no link to cut"):
            hosts[0].set_link(False)
        server = hosts[1].processes[0]
    assert server.poll() is not None


def test_make_test_hosts_gives_namespaces_when_it_can(make_test_hosts: Callable[[int], NetHosts]) -> None:
    hosts = make_test_hosts(1)
    assert hosts.isolated == (why_unavailable() is None)
    port = serve(hosts[0])
    assert fetch(hosts[0].address, port) == "h1"
