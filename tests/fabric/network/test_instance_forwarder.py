"""InstanceInputEndpoint: each port of a range forwarded to one instance."""

from __future__ import annotations

import socket

import anyio
import pytest

from fabric.network import InvalidSpecError, NoFreePortError, open_instance_forwarder


def free_range(n: int) -> range:
    """``n`` consecutive free ports on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return range(base, base + n)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


async def test_port_n_goes_to_the_nth_instance_by_id(farm):
    instances = await farm.instances(3)
    ports = free_range(4)
    shuffled = [instances[2].backend(), instances[0].backend(busy=True), instances[1].backend()]
    async with open_instance_forwarder("Rdp", ports, shuffled) as fwd:
        for n in range(3):
            assert await farm.who(("127.0.0.1", ports[n]), 2) == [f"web_IN_{n}"] * 2
        assert fwd.addresses() == {f"web_IN_{n}": ("127.0.0.1", ports[n]) for n in range(3)}


async def test_instances_added_and_removed_open_and_close_ports(farm):
    a, b = await farm.instances(2)
    ports = free_range(2)
    async with open_instance_forwarder("Rdp", ports, [a.backend()]) as fwd:
        with pytest.raises(OSError):
            await farm.connect(("127.0.0.1", ports[1]))
        await fwd.set_backends([a.backend(), b.backend()])
        assert await farm.who(("127.0.0.1", ports[1]), 1) == ["web_IN_1"]
        await fwd.set_backends([b.backend()])
        assert await farm.who(("127.0.0.1", ports[0]), 1) == ["web_IN_1"]
        with pytest.raises(OSError):
            await farm.connect(("127.0.0.1", ports[1]))


async def test_a_restarted_instance_is_reached_again(farm):
    (a,) = await farm.instances(1)
    ports = free_range(1)
    async with open_instance_forwarder("Rdp", ports, [a.backend()]):
        a.stop()
        with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream)):
            await farm.connect(("127.0.0.1", ports[0]))
        await a.start()
        assert await farm.who(("127.0.0.1", ports[0]), 1) == ["web_IN_0"]


async def test_more_instances_than_ports_is_a_named_error(farm):
    a, b = await farm.instances(2)
    with pytest.raises(InvalidSpecError, match="widen the port range"):
        async with open_instance_forwarder("Rdp", free_range(1), [a.backend(), b.backend()]):
            pass


async def test_a_taken_port_in_the_range_is_a_named_error(farm, taken_port):
    (a,) = await farm.instances(1)
    with pytest.raises(NoFreePortError, match=f"port {taken_port}"):
        async with open_instance_forwarder("Rdp", range(taken_port, taken_port + 1), [a.backend()]):
            pass


async def test_udp_ports_are_forwarded_too(farm):
    a, b = await farm.udp_instances(2)
    ports = free_range(2)
    async with open_instance_forwarder("Voice", ports, [a.backend(), b.backend()], protocol="udp"):
        sock = await anyio.create_udp_socket(family=socket.AF_INET, local_host="127.0.0.1")
        async with sock:
            for n in range(2):
                await sock.sendto(b"hello", "127.0.0.1", ports[n])
                with anyio.fail_after(5):
                    reply, _ = await sock.receive()
                assert reply == f"dns_IN_{n}:hello".encode()
