"""The controller hears at once when a joined host's link drops (the listener's on_disconnect,
which fabric.cluster.port turns into JoinedLinkLost): called once the link is down, with the
node's Peer, and a bug in it stops nothing."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from actors import Peer
from tests.actors.tls_kit import cluster

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


async def test_on_disconnect_hears_a_dropped_link(tmp_path: Path) -> None:
    lost: list[tuple[str, bool]] = []

    def on_disconnect(peer: Peer) -> None:
        lost.append((peer.node, peer.connected))
        raise RuntimeError("a bug in the owner's callback")

    async with cluster(tmp_path) as c:
        c.listener.on_disconnect = on_disconnect
        c.listener.peer("good").cut()  # as a network fault would
        with anyio.fail_after(10):
            while not lost:
                await anyio.sleep(0.01)
        assert lost[0] == ("good", False)
        await c.still_works()  # linked again by itself
