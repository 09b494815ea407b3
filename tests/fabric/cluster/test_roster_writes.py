"""The joined hosts' roster is written off the controller's event loop: a join or renewal waits
for its write in a worker thread (one write at a time, each of the roster as it is then, so the
last one written holds every update)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

import fabric.cluster.port as port_module
from fabric.cluster.join import HostJoined
from fabric.cluster.port import Roster, read_hosts
from fabric.settings import Settings

pytestmark = [pytest.mark.timeout(60)]

#: how long each write takes here (a disk slow to fsync)
SLOW = 0.5


def joined(name: str, expires: float) -> HostJoined:
    return HostJoined(
        name=name,
        cores=2,
        fault_domain=0,
        memory_mb=1024,
        address="127.0.0.1:5000",
        joined=0.0,
        cert_expires=expires,
    )


async def test_joins_write_the_roster_off_the_event_loop_and_lose_no_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = port_module.write_private

    def slow(path: Path, data: bytes) -> None:
        time.sleep(SLOW)
        real(path, data)

    monkeypatch.setattr(port_module, "write_private", slow)
    roster = Roster(tmp_path / "cluster", Settings.fast())
    gaps: list[float] = []

    async def tick() -> None:
        last = anyio.current_time()
        while True:
            await anyio.sleep(0.01)
            now = anyio.current_time()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        async with anyio.create_task_group() as joins:  # three hosts join at once
            for name in ("h1", "h2", "h3"):
                joins.start_soon(roster.joined, joined(name, 100.0))
        await roster.joined(joined("h2", 200.0))  # h2 renews: the last write
        tg.cancel_scope.cancel()
    # the loop kept running while 4 writes of SLOW s each went on (before: blocked for them all)
    assert max(gaps) < 2 * SLOW, max(gaps)
    stored = {h.name: h.cert_expires for h in read_hosts(tmp_path)}
    assert stored == {"h1": 100.0, "h2": 200.0, "h3": 100.0}, stored
