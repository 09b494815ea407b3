"""A link that follows a node to another address: after a drop the connecting side tries the
addresses it is given in turn, each server's certificate checked against its own address."""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import Actor, Request, ServerTLS, open_system
from tests.actors.tls_certs import CA
from tests.actors.tls_kit import OPTIONS

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


class Which(Request[str], frozen=True, tag=True):
    """Which node are you?"""


class Where(Actor):
    """Answers which node it is."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def receive(self, message: Any) -> Any:
        return self.answer


def server_for(ca: CA, address: str) -> ServerTLS:
    cert, key = ca.issue(address, ip=address)
    return ServerTLS(cert, key, ca.ca_path)


async def test_a_dropped_link_comes_back_at_the_next_address(tmp_path: Path) -> None:
    ca = CA.make(tmp_path / "ca")
    async with open_system() as first, open_system() as second, open_system() as host:
        for system, answer in ((first, "first"), (second, "second")):
            system.register("where", await system.spawn(partial(Where, answer), name="where"))
        one = await first.listen(
            "127.0.0.1", 0, tls=server_for(ca, "127.0.0.1"), name="controller", options=OPTIONS
        )
        two_address = ("127.0.0.2", 0)
        # The second node does not listen yet (a follower): the host finds nobody there.
        addresses = [one.address]
        client = ca.client("host", server_name="127.0.0.1")
        peer = await host.connect(
            one.address, tls=client, name="host", options=OPTIONS, addresses=lambda: addresses
        )
        with anyio.fail_after(10):
            assert await peer.ref("where").ask(Which()) == "first"
        two = await second.listen(
            *two_address, tls=server_for(ca, "127.0.0.2"), name="controller", options=OPTIONS
        )
        with socket.socket() as gone:  # a replica that is down: its port refuses
            gone.bind(("127.0.0.3", 0))
            dead = gone.getsockname()
        addresses += [dead, two.address]
        await one.aclose()  # the first node goes: its links drop and its port refuses
        with anyio.fail_after(20):
            await two.wait_peer("host")
            assert await peer.ref("where").ask(Which()) == "second"  # the same Peer, the other node
