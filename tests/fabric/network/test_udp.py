"""UDP endpoints: datagrams forwarded to a sticky instance per client, replies routed back."""

from __future__ import annotations

import socket

import anyio

from fabric.network import EndpointSpec, open_load_balancer

DNS = EndpointSpec("Dns", "udp", 0)


async def ask(sock, address, data: bytes) -> bytes:
    await sock.sendto(data, *address)
    with anyio.fail_after(5):
        reply, _ = await sock.receive()
    return reply


async def client():
    return await anyio.create_udp_socket(family=socket.AF_INET, local_host="127.0.0.1")


async def test_round_trip_sticks_to_one_instance_per_client(farm):
    a, b = await farm.udp_instances(2)
    async with open_load_balancer(DNS, [a.backend(), b.backend()]) as lb:
        async with await client() as first, await client() as second:
            replies = [await ask(first, lb.address, b"q%d" % i) for i in range(3)]
            assert replies == [b"dns_IN_0:q0", b"dns_IN_0:q1", b"dns_IN_0:q2"]
            assert await ask(second, lb.address, b"hi") == b"dns_IN_1:hi"
        stats = lb.stats()
    assert stats.connections == 2  # one session per client address
    assert stats.bytes_up == len(b"q0q1q2hi")


async def test_udp_skips_instances_out_of_rotation(farm):
    a, b = await farm.udp_instances(2)
    async with open_load_balancer(DNS, [a.backend(busy=True), b.backend()]) as lb:
        async with await client() as one, await client() as two:
            assert (await ask(one, lb.address, b"x")).startswith(b"dns_IN_1:")
            assert (await ask(two, lb.address, b"y")).startswith(b"dns_IN_1:")
        assert a.received == 0


async def test_udp_client_moves_when_its_instance_leaves_rotation(farm):
    a, b = await farm.udp_instances(2)
    async with open_load_balancer(DNS, [a.backend(), b.backend()]) as lb, await client() as sock:
        assert (await ask(sock, lb.address, b"1")).startswith(b"dns_IN_0:")
        lb.update("dns_IN_0", ready=False)
        assert (await ask(sock, lb.address, b"2")).startswith(b"dns_IN_1:")


async def test_udp_port_taken_falls_back(farm):
    (a,) = await farm.udp_instances(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        async with open_load_balancer(EndpointSpec("Dns", "udp", port), [a.backend()]) as lb:
            assert lb.address[1] > port
            async with await client() as sock:
                assert await ask(sock, lb.address, b"ok") == b"dns_IN_0:ok"


async def test_udp_refusal_moves_the_client_to_another_instance(farm):
    a, b = await farm.udp_instances(2)
    a.stop()  # its port now answers with ICMP port unreachable
    async with open_load_balancer(DNS, [a.backend(), b.backend()]) as lb:
        async with await client() as sock:
            with anyio.fail_after(5):
                while True:  # the datagram sent to the dead instance is lost
                    await sock.sendto(b"anyone?", *lb.address)
                    with anyio.move_on_after(0.2):
                        reply, _ = await sock.receive()
                        break
            assert reply == b"dns_IN_1:anyone?"
        assert lb.rotation() == ["dns_IN_1"]
        assert lb.stats().refused >= 1
