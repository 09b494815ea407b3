"""A role's listening sockets: a port still held by an exiting incarnation is waited for, briefly."""

from __future__ import annotations

import socket

import anyio
import pytest

from fabric.guest.web_workers import EndpointBindError, close_sockets, open_sockets_when_free
from roles.protocol import EndpointInfo
from tests.fabric.guest.guest_kit import free_port

pytestmark = pytest.mark.timeout(30)


def _endpoint(port: int) -> EndpointInfo:
    return EndpointInfo(name="HttpIn", protocol="http", host="127.0.0.1", port=port)


def _hold(port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


async def test_a_port_released_within_the_wait_is_taken() -> None:
    port = free_port()
    holder = _hold(port)
    lines: list[str] = []
    async with anyio.create_task_group() as tg:

        async def release_soon() -> None:
            await anyio.sleep(0.3)
            holder.close()

        tg.start_soon(release_soon)
        sockets = await open_sockets_when_free([_endpoint(port)], lines.append, patience=10)
    try:
        assert sockets["HttpIn"].getsockname()[1] == port
        assert len(lines) == 1 and "waiting up to 10 s" in lines[0]
    finally:
        close_sockets(sockets)


async def test_a_port_held_for_good_fails_after_the_wait_naming_it() -> None:
    port = free_port()
    with _hold(port):
        start = anyio.current_time()
        with pytest.raises(
            EndpointBindError, match=f"cannot listen on 127.0.0.1:{port} for endpoint 'HttpIn'"
        ):
            await open_sockets_when_free([_endpoint(port)], lambda line: None, patience=0.5)
        assert anyio.current_time() - start >= 0.5
