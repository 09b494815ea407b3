"""A joined host ends the hangs it holds by itself: a stopped process is resumed at the end it
was given, a renewal moves that end (a hang until undone, leased), a resume on request cancels
the timer; the backstop process resumes by itself too. Real processes (`sleep`)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import anyio
import psutil
import pytest

from fabric.host.hangs import Hangs
from fabric.host.processes import Proc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sleeper() -> Iterator[Proc]:
    """A stopped `sleep` process, killed at the end."""
    process = subprocess.Popen(["sleep", "60"])
    started = psutil.Process(process.pid).create_time()
    process.send_signal(signal.SIGSTOP)
    try:
        yield Proc(process.pid, 0, 0, "sleep", started)
    finally:
        process.kill()
        process.wait()


def stopped(p: Proc) -> bool:
    return bool(psutil.Process(p.pid).status() == psutil.STATUS_STOPPED)


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not check():
            await anyio.sleep(0.02)


async def test_a_held_hang_ends_by_itself_and_a_renewal_moves_its_end(sleeper: Proc) -> None:
    async with anyio.create_task_group() as tg:
        hangs = Hangs(tg.start_soon)
        await until(lambda: stopped(sleeper))
        key = [(sleeper.pid, sleeper.started)]
        hangs.hold([sleeper], 0.5)
        assert hangs.renew(key, 30.0)  # a lease renewed: its end moved
        await anyio.sleep(1.0)
        assert stopped(sleeper)  # past its first end
        assert hangs.renew(key, 0.1)
        await until(lambda: not stopped(sleeper))
        assert not hangs.held and not hangs.renew([(sleeper.pid, sleeper.started)], 1.0)


async def test_a_resume_on_request_cancels_the_timer(sleeper: Proc) -> None:
    async with anyio.create_task_group() as tg:
        hangs = Hangs(tg.start_soon)
        hangs.hold([sleeper], 30.0)
        hangs.release([(sleeper.pid, sleeper.started)])
        assert not hangs.held
        tg.cancel_scope.cancel()  # no timer is left running


async def test_the_backstop_resumes_by_itself(sleeper: Proc) -> None:
    argv = [sys.executable, "-m", "fabric.host.hangs", "0.2", f"{sleeper.pid}:{sleeper.started!r}"]
    done = await anyio.run_process(argv)
    assert done.returncode == 0 and not stopped(sleeper)
