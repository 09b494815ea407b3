"""Network links under faults: a drop, the fault hooks, an unanswered ping, a node that
connects again while its old connection still looks alive."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from actors import LinkOptions, Peer
from actors._connector import backoff, open_tcp
from actors._net import read_hello, send_hello
from actors._tls import TLSChannel
from tests.actors.tls_kit import OPTIONS, cluster

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


async def wait_down(connected: Callable[[], bool]) -> None:
    """Poll (with a deadline) until ``connected()`` is false."""
    with anyio.fail_after(10):
        while connected():
            await anyio.sleep(0.01)


async def test_a_dropped_link_comes_back_by_itself(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "actors.net")
    async with cluster(tmp_path) as c:
        c.listener.peer("good").cut()  # as a network fault would
        await wait_down(lambda: c.good.connected)
        await c.still_works()
        assert c.good.connected
    assert caplog.text.count("link to node 'controller' is up") == 2


async def test_the_fault_hooks_delay_and_drop_frames_of_a_network_link(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        echo = c.good.ref("echo")
        assert echo.faults is c.good.faults
        c.good.faults.delay(0.3, direction="out")
        start = time.monotonic()
        assert await echo.ask("slow") == "slow"
        assert time.monotonic() - start >= 0.3
        c.good.faults.clear()
        c.good.faults.drop(1.0, direction="out")
        with pytest.raises(TimeoutError):
            await echo.ask("lost", timeout=0.3)
        c.good.faults.clear()
        assert await echo.ask("fine") == "fine"


async def test_an_unanswered_ping_cuts_the_link_and_it_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = LinkOptions(ping_interval=0.1, ping_timeout=0.3, reconnect_min=0.05, reconnect_max=0.5)
    async with cluster(tmp_path, options) as c:
        c.good.faults.cut()  # a partition: no frame crosses, the TCP connection stays
        await wait_down(lambda: c.good.connected)
        c.good.faults.clear()
        await c.still_works()
    assert "did not answer a ping within 0.3 s: cutting its link" in caplog.text


async def test_a_node_connecting_again_replaces_its_old_connection(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        # The twin's first connection: past its hello, then silent, as one whose machine
        # rebooted looks until TCP notices.
        tls = c.ca.client("twin")
        old = TLSChannel(
            await open_tcp(*c.listener.address),
            tls.context(),
            server_side=False,
            server_hostname="controller",
        )
        await old.handshake()
        await send_hello(old, "twin")
        await read_hello(old, "controller")
        await c.listener.wait_peer("twin")
        twin = await c.system.connect(c.listener.address, tls=tls, name="twin", options=OPTIONS)
        assert await twin.ref("echo").ask("new link") == "new link"
        assert await c.listener.peer("twin").ref("echo").ask("and back") == "and back"
        with anyio.fail_after(10):
            while await old.receive_some():
                pass  # the controller hung up on the old connection
        old.close()


def test_reconnection_waits_double_with_jitter_up_to_the_cap() -> None:
    options = LinkOptions(reconnect_min=0.1, reconnect_max=2.0)
    for failures, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (5, 2.0), (60, 2.0)]:
        waits = {backoff(failures, options) for _ in range(50)}
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(waits) > 1  # drawn at random: nodes cut off together come back apart


async def test_on_connect_hears_each_link_and_its_failure_stops_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[str] = []

    def on_connect(peer: Peer) -> None:
        heard.append(peer.node)
        raise RuntimeError("a bug in the owner's callback")

    async with cluster(tmp_path) as c:
        listener = await c.system.listen(
            "127.0.0.1", 0, tls=c.ca.server(), name="controller", options=OPTIONS, on_connect=on_connect
        )
        peer = await c.system.connect(listener.address, tls=c.ca.client("h"), name="h", options=OPTIONS)
        assert await peer.ref("echo").ask("works") == "works"
        listener.peer("h").cut()
        with anyio.fail_after(10):
            while len(heard) < 2:
                await anyio.sleep(0.01)
        assert await peer.ref("echo").ask("again") == "again"
    assert heard == ["h", "h"]
    assert "on_connect failed for node 'h'" in caplog.text
