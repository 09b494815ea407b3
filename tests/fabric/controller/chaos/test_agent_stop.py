"""The chaos agent's stop undoes what is in force, shielded but bounded: a stuck undo is cut at
its own deadline and recorded as failed (autojump clock)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio

from actors import open_system
from fabric.controller.chaos.agent import UNDO_TIMEOUT, ChaosAgent, Entry


class _Events:
    def record(self, *args: Any, **kwargs: Any) -> None:
        """The timeline is not under test."""


class _State:
    events = _Events()

    def instances(self) -> list[Any]:
        return []


class _Controller:
    """What the agent reads of its controller: the live state (here, an empty one)."""

    state = _State()
    ref = None


async def _stuck_undo() -> str:
    await anyio.sleep_forever()
    return "never"


async def test_a_stuck_undo_cannot_hold_the_agent_s_stop(autojump_clock: trio.abc.Clock) -> None:
    agent = ChaosAgent(_Controller())
    entry = Entry(
        id="f1",
        kind="hang",
        label="an undo that never returns",
        target="",
        instances=[],
        hits=[],
        at=0.0,
        wall="",
        state="active",
        undo=_stuck_undo,
    )
    async with open_system() as system:
        # A stop budget well past the undo's: only the undo's own deadline can end it.
        await system.spawn(lambda: agent, name="chaos", stop_timeout=10 * UNDO_TIMEOUT)
        agent.active[entry.id] = entry
        started = anyio.current_time()
    assert anyio.current_time() - started == pytest.approx(UNDO_TIMEOUT)
    assert entry.state == "failed"
    assert f"undo cut after {UNDO_TIMEOUT:g} s" in entry.detail
