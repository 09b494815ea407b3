"""The chaos agent on anyio's asyncio backend (the rest of the suite runs on trio)."""

from __future__ import annotations

from pathlib import Path

import anyio
import psutil
import pytest

from fabric.controller.chaos.messages import Hang, Inject, Partition, Target, ToxicFault
from fabric.network.toxics import Latency
from tests.fabric.chaos.chaos_kit import guestbook


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_faults_apply_and_undo_on_asyncio(tmp_path: Path) -> None:
    async def main() -> None:
        async with guestbook(tmp_path / "state") as book, book.client() as client:
            watch = await client.watch()
            hang = await client.inject(
                Inject(fault=Hang(target=Target(place="role-host", instance="Web_IN_0"), duration=0.3))
            )
            pid = hang.hits[0].pid
            assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
            toxic = await client.inject(
                Inject(fault=ToxicFault(target=Target(endpoint="HttpIn"), toxic=Latency(latency=10)))
            )
            link = await client.inject(
                Inject(fault=Partition(target=Target(instance="Worker_IN_0"), link="guest"))
            )
            with anyio.fail_after(10):
                while (await client.faults())[0].id != toxic.id:  # the hang ended by itself
                    await anyio.sleep(0.05)
            assert psutil.Process(pid).status() != psutil.STATUS_STOPPED
            undone = await client.undo()
            assert {r.id for r in undone} == {toxic.id, link.id}
            assert all(r.state == "undone" for r in undone)
            batch = await client.stop_watch(watch.id, 0)
            assert {e.instance for e in batch.events} == {
                "Web_IN_0",
                "Web_IN_1",
                "Worker_IN_0",
                "Worker_IN_1",
            }
            assert not batch.active

    anyio.run(main, backend="asyncio")
