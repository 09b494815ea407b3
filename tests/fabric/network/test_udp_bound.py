"""The UDP balancers of one process keep a bounded number of client sessions in all (a socket
each, for up to the idle timeout): a new client past it is dropped, so that datagrams from many
source ports cannot take `fabric serve` to its descriptor limit; the sessions kept go on."""

from __future__ import annotations

import socket

import anyio
import pytest

from fabric.network import EndpointSpec, _udp, open_load_balancer

DNS = EndpointSpec("Dns", "udp", 0)


async def ask(sock: anyio.abc.UDPSocket, address: tuple[str, int], data: bytes) -> bytes:
    await sock.sendto(data, *address)
    with anyio.fail_after(5):
        reply, _ = await sock.receive()
    return reply


async def test_clients_past_the_process_bound_are_dropped(farm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_udp, "MAX_SESSIONS", 2)
    (a,) = await farm.udp_instances(1)
    async with open_load_balancer(DNS, [a.backend()]) as lb:
        clients = [
            await anyio.create_udp_socket(family=socket.AF_INET, local_host="127.0.0.1") for _ in range(3)
        ]
        try:
            assert await ask(clients[0], lb.address, b"one") == b"dns_IN_0:one"
            assert await ask(clients[1], lb.address, b"two") == b"dns_IN_0:two"
            await clients[2].sendto(b"three", *lb.address)
            with anyio.fail_after(10):
                while lb.stats().rejected < 1:
                    await anyio.sleep(0.01)
            assert a.received == 2  # the third never reached the instance
            assert await ask(clients[0], lb.address, b"again") == b"dns_IN_0:again"
        finally:
            for c in clients:
                await c.aclose()
