"""A leader's balancer whose shared port another socket of the machine took unshared before it
listened (EADDRINUSE at listen) waits for the port, instead of crashing the controller with it
(its deploy then stayed InProgress for ever: the replica failover test's 300 s hangs)."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest

from fabric.network import Backend, EndpointSpec, open_load_balancer, share_ports, shared_listening
from tests.fabric.replica.test_replica_balancer import serve_site


@pytest.mark.timeout(30)
async def test_a_sharing_balancer_whose_port_is_taken_listens_once_it_is_free() -> None:
    async with anyio.create_task_group() as tg:
        site = await tg.start(serve_site, "leader")
        share_ports()
        try:
            async with open_load_balancer(EndpointSpec("HttpIn", "http"), kernel=False) as own:
                host, port = own.address
                other = socket.socket()  # another process's endpoint, bound once ours was
                other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                other.bind((host, port))
                other.listen()
                with other:
                    own.set_backends([Backend("l", host, site)])  # ours would listen now
                    await anyio.sleep(1.5)  # the failing listen was at once
                    assert not shared_listening(host, port)
                with anyio.fail_after(10):
                    while not shared_listening(host, port):
                        await anyio.sleep(0.05)
                async with httpx.AsyncClient(timeout=5) as client:
                    assert (await client.get(f"http://{host}:{port}/")).text == "leader"
        finally:
            share_ports(False)
        tg.cancel_scope.cancel()
