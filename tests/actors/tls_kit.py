"""A controller and a good node linked to it in one process, for the network-link tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from actors import Actor, ActorSystem, LinkOptions, Listener, Peer, open_system
from tests.actors.tls_certs import CA

OPTIONS = LinkOptions(handshake_timeout=1.0, reconnect_min=0.05, reconnect_max=0.5)


class Echo(Actor):
    """Answers with the message."""

    async def receive(self, message: Any) -> Any:
        return message


@dataclass
class Cluster:
    """A controller's system and listener, and the Peer of a good node linked to it."""

    ca: CA
    system: ActorSystem
    listener: Listener
    good: Peer

    async def still_works(self) -> None:
        """The good link answers both ways."""
        with anyio.fail_after(10):
            assert await self.good.ref("echo").ask("still there?") == "still there?"
            back = await self.listener.wait_peer("good")
            assert await back.ref("echo").ask("and back?") == "and back?"


@asynccontextmanager
async def cluster(tmp_path: Path, options: LinkOptions = OPTIONS) -> AsyncIterator[Cluster]:
    """A controller listening, and a good node linked to it, in this process."""
    ca = CA.make(tmp_path / "ca")
    async with open_system() as system:
        system.register("echo", await system.spawn(Echo, name="echo"))
        listener = await system.listen("127.0.0.1", 0, tls=ca.server(), name="controller", options=options)
        good = await system.connect(listener.address, tls=ca.client("good"), name="good", options=options)
        cluster = Cluster(ca, system, listener, good)
        await cluster.still_works()
        yield cluster
        await cluster.still_works()
