"""A toxic fault on the load balancer's kernel data path (the default as root): the next
connection gets it; a connection the kernel opened before does not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream

from fabric.controller.chaos.messages import Inject, Target, ToxicFault
from fabric.network import Latency
from tests.fabric.chaos.chaos_kit import guestbook

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="the kernel path needs root and nft"
)

LATENCY = 1.0


async def get(stream: SocketStream) -> float:
    """GET / on a kept-alive connection (a chunked response); the seconds it took."""
    begin = anyio.current_time()
    await stream.send(b"GET / HTTP/1.1\r\nHost: guestbook\r\n\r\n")
    data = b""
    with anyio.fail_after(20):
        while not data.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of a chunked response
            data += await stream.receive()
    head = data.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200"), head
    return anyio.current_time() - begin


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_toxic_fault_reaches_the_next_connection_and_spares_older_kernel_ones(tmp_path: Path) -> None:
    async with guestbook(tmp_path / "state") as book:
        [ep] = (await book.targets()).endpoints
        before = await anyio.connect_tcp(ep.host, ep.port)  # on the kernel path
        async with before, book.client() as client:
            assert await get(before) < LATENCY
            fault = Inject(
                fault=ToxicFault(target=Target(endpoint=ep.name), toxic=Latency(latency=int(LATENCY * 1000)))
            )
            await client.inject(fault)
            async with await anyio.connect_tcp(ep.host, ep.port) as after:
                assert await get(after) >= LATENCY  # the very next connection
            assert await get(before) < LATENCY  # opened before the toxic: left alone
