"""Binding the public port (or the next free one), and closing without leftovers."""

from __future__ import annotations

import errno
import logging

import anyio
import psutil
import pytest

from fabric.network import EndpointSpec, NoFreePortError, _sock, open_load_balancer


def open_fds() -> int:
    return psutil.Process().num_fds()


async def test_public_port_is_used_when_free(farm):
    async with open_load_balancer(EndpointSpec("HttpIn", "http", 0)) as first:
        port = first.address[1]
    async with open_load_balancer(EndpointSpec("HttpIn", "http", port)) as lb:
        assert lb.address == ("127.0.0.1", port)


async def test_taken_port_falls_back_to_the_next_free_one(farm, taken_port, caplog):
    (a,) = await farm.instances(1)
    spec = EndpointSpec("HttpIn", "http", taken_port)
    with caplog.at_level(logging.INFO, logger="fabric.network"):
        async with open_load_balancer(spec, [a.backend()]) as lb:
            assert lb.address[1] > taken_port
            assert await farm.who(lb.address, 1) == ["web_IN_0"]
            assert lb.stats().port == lb.address[1]
    message = f"port {taken_port} on 127.0.0.1 is taken; listening on port {lb.address[1]}"
    assert any(message in r.getMessage() for r in caplog.records)


async def test_no_free_port_is_a_named_error(taken_port):
    spec = EndpointSpec("HttpIn", "http", taken_port)
    with pytest.raises(NoFreePortError, match="choose another public port"):
        async with open_load_balancer(spec, port_attempts=1):
            pass


async def test_errors_in_the_body_reach_the_caller_unwrapped():
    with pytest.raises(KeyError):
        async with open_load_balancer(EndpointSpec("HttpIn", "http", 0)):
            raise KeyError("mine")


async def test_closing_ends_connections_and_leaves_no_socket_behind(farm, until):
    a, b = await farm.instances(2)
    before = open_fds()
    async with open_load_balancer(EndpointSpec("HttpIn", "http", 0), [a.backend(), b.backend()]) as lb:
        clients = [await farm.connect(lb.address) for _ in range(4)]
        assert await clients[0].echo(b"ping") == b"ping"
        address = lb.address
    # Every client sees its connection end...
    for client in clients:
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await client.stream.receive()
        await client.aclose()
    # ...nobody listens any more...
    with pytest.raises(OSError):
        await anyio.connect_tcp(*address)
    # ...and once the instances have closed their ends, every descriptor is back.
    await until(lambda: open_fds() == before)


async def test_aclose_inside_the_block_closes_and_returns(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(EndpointSpec("HttpIn", "http", 0), [a.backend()]) as lb:
        client = await farm.connect(lb.address)
        await lb.aclose()
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await client.stream.receive()
        reached = True
    assert reached


async def test_a_port_below_1024_not_ours_moves_up_by_8000(monkeypatch, caplog):
    # As a user who may not bind privileged ports (the suite may run as root).
    real_listen = _sock.listen

    async def unprivileged_listen(host: str, port: int, backlog: int = 1024):
        if port < 1024:
            raise PermissionError(errno.EACCES, "Permission denied")
        return await real_listen(host, port, backlog)

    monkeypatch.setattr(_sock, "listen", unprivileged_listen)
    with caplog.at_level(logging.WARNING, logger="fabric.network"):
        async with open_load_balancer(EndpointSpec("HttpIn", "http", 80)) as lb:
            assert 8080 <= lb.address[1] < 8180
    assert any("port 80 on 127.0.0.1 is taken" in r.getMessage() for r in caplog.records)
