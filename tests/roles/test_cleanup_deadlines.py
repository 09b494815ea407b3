"""A role host's shielded clean-up after on_stop has a deadline of its own (autojump clock)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import trio

from roles.hosts._common import STOP_MARGIN
from roles.hosts.worker import WorkerHost
from tests.roles.role_parent import worker_config


class StuckAfterStop(WorkerHost):
    """A host whose clean-up after on_stop never ends (as sites that never close would)."""

    async def after_role_stopped(self) -> None:
        await anyio.sleep_forever()


async def test_a_stuck_clean_up_after_on_stop_is_cut_at_its_deadline(
    tmp_path: Path, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    config = worker_config("worker", tmp_path / "marks", graceful_timeout=3.0)
    host = StuckAfterStop(config)
    done = anyio.Event()
    started = anyio.current_time()
    # Cancelled from outside at once, as a stopping host is: the clean-up is shielded, and
    # only its own deadline (the sites' graceful_timeout plus the host's margin) ends it.
    with anyio.CancelScope() as outer:
        outer.cancel()
        await host.shutdown_role(done)
    assert done.is_set()
    assert anyio.current_time() - started == pytest.approx(3.0 + STOP_MARGIN)
    assert "clean-up after on_stop did not end within 8 s" in caplog.text
