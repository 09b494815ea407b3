"""An actor that crashes with several errors at once has every one of them logged; each test on
trio and on asyncio."""

from __future__ import annotations

import logging

import anyio
import pytest

from actors import Actor, open_system

pytestmark = pytest.mark.anyio  # the anyio_backend fixture (tests/conftest.py) runs each on both


class TwoFailures(Actor):
    """Two background tasks: the first fails, the second fails again while being cancelled."""

    async def on_start(self) -> None:
        self.start_soon(self.first)
        self.start_soon(self.second)

    async def first(self) -> None:
        await anyio.sleep(0.01)
        raise KeyError("the first failure")

    async def second(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise OSError("the second failure, on the way out")


async def test_every_error_of_a_crash_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="actors")
    async with open_system() as system:
        ref = await system.spawn(TwoFailures, name="two")
        reason = await ref.join()
    assert isinstance(reason, KeyError)  # the reason a supervisor sees is still the first
    crash_logs = [r for r in caplog.records if r.name == "actors" and "crashed" in r.getMessage()]
    assert len(crash_logs) == 1
    text = caplog.text
    assert "the first failure" in text and "the second failure, on the way out" in text
    # Both tracebacks, not only the messages: each names the method that raised.
    assert "in first" in text and "in second" in text
