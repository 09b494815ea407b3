"""The stall detector: a handler that blocks the event loop is named in a log line (and in the
file REDDOG_STALL_LOG names), on trio and asyncio, in-process and in a child process."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import STALL_LOG_ENV, Actor, open_system
from tests.actors.sample_actors import Add, Block, Get, Recorder


@pytest.mark.anyio
async def test_a_blocking_handler_is_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="actors.stall")
    async with open_system() as system:
        ref = await system.spawn(Recorder, name="stuck")
        await ref.ask(Block(0.3), timeout=10)
        assert await ref.ask(Add(1), timeout=10) == 1  # a handler that does not block: no line
    stalls = [r.getMessage() for r in caplog.records if r.name == "actors.stall"]
    assert len(stalls) == 1, stalls
    assert "in actor stuck handling Block" in stalls[0]


async def test_quick_handlers_are_not_stalls(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="actors.stall")
    async with open_system() as system:
        ref = await system.spawn(Recorder, name="quick")
        for n in range(200):
            await ref.ask(Add(n), timeout=10)
        await ref.ask(Block(0.02), timeout=10)  # under the 100 ms threshold
    assert [r for r in caplog.records if r.name == "actors.stall"] == []


async def test_a_child_process_records_its_stalls_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "stalls.jsonl"
    monkeypatch.setenv(STALL_LOG_ENV, str(record))
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="child-stuck")
        pid = await ref.ask(Block(0.4), timeout=30) or ref.pid
    with anyio.fail_after(10):
        while not record.exists():
            await anyio.sleep(0.01)
    stalls = [json.loads(line) for line in record.read_text().splitlines()]
    mine = [s for s in stalls if s["process"] == "child-stuck"]
    assert len(mine) == 1, stalls
    assert mine[0]["actor"] == "child-stuck" and mine[0]["message"] == "Block"
    assert mine[0]["seconds"] >= 0.4 and mine[0]["pid"] == pid


async def test_the_blocking_message_is_named_among_those_handled_in_the_same_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="actors.stall")
    async with open_system() as system:
        ref = await system.spawn(Recorder, name="busy")
        await ref.tell(Block(0.3))
        for n in range(20):  # queued behind it: handled in the same step, after it
            await ref.tell(Add(n))
        assert (await ref.ask(Get(), timeout=10))["total"] == sum(range(20))
    stalls = [r.getMessage() for r in caplog.records if r.name == "actors.stall"]
    assert len(stalls) == 1 and "in actor busy handling Block" in stalls[0], stalls


class BlockThenStop(Actor):
    """Blocks the event loop, then stops itself in the same step."""

    async def receive(self, message: Any) -> Any:
        time.sleep(0.3)
        self.stop()


async def test_an_actor_that_stops_in_the_step_it_stalled_is_still_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="actors.stall")
    async with open_system() as system:
        ref = await system.spawn(BlockThenStop, name="quitter")
        await ref.tell("block")
        with anyio.fail_after(10):
            await ref.join()
    stalls = [r.getMessage() for r in caplog.records if r.name == "actors.stall"]
    assert len(stalls) == 1 and "in actor quitter handling str" in stalls[0], stalls
