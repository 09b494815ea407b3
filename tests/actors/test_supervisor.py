"""Supervisors: strategies with real SIGKILLed children, intensity, backoff and reset."""

from __future__ import annotations

import itertools
import os
import signal
from typing import Any

import anyio
import pytest
import trio

from actors import (
    Actor,
    ChildSpec,
    GetChild,
    ProcessOptions,
    Ref,
    RestartIntensityExceeded,
    Supervisor,
    WhichChildren,
    open_system,
)
from tests.actors.sample_actors import Add, Get

pytestmark = pytest.mark.timeout(90)

FAST = ProcessOptions(ping_interval=None, stop_timeout=2.0, term_timeout=1.0)


def process_child(name: str, restart: str = "permanent") -> ChildSpec:
    return ChildSpec(name=name, target="tests.actors.sample_actors:Recorder", options=FAST, restart=restart)  # type: ignore[arg-type]


async def pids(sup: Ref) -> dict[str, int | None]:
    return {info.name: info.pid for info in await sup.ask(WhichChildren())}


async def wait_restarted(sup: Ref, name: str, old_pid: int) -> dict[str, int | None]:
    with anyio.fail_after(30):
        while True:
            now = await pids(sup)
            if now[name] not in (None, old_pid):
                return now
            await anyio.sleep(0.02)


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        ("one_for_one", {"b"}),
        ("one_for_all", {"a", "b", "c"}),
        ("rest_for_one", {"b", "c"}),
    ],
)
async def test_sigkilled_child_restarted_by_strategy(strategy: str, restarted: set[str]) -> None:
    async with open_system() as system:
        sup = await system.spawn(
            lambda: Supervisor(
                [process_child("a"), process_child("b"), process_child("c")], strategy=strategy
            ),  # type: ignore[arg-type]
            name="sup",
        )
        before = await pids(sup)
        b_ref = await sup.ask(GetChild("b"))
        await b_ref.tell(Add(5))
        assert before["b"] is not None
        os.kill(before["b"], signal.SIGKILL)
        await wait_restarted(sup, "b", before["b"])
        # the others in the group come back too; wait until every child runs
        with anyio.fail_after(30):
            while None in (after := await pids(sup)).values() or any(
                after[n] == before[n] for n in restarted
            ):
                await anyio.sleep(0.02)
        changed = {name for name in before if after[name] != before[name]}
        assert changed == restarted
        # the Ref taken before the crash still reaches the new incarnation (fresh state)
        assert (await b_ref.ask(Get()))["total"] == 0


async def test_transient_and_temporary_children() -> None:
    async with open_system() as system:
        sup = await system.spawn(
            lambda: Supervisor([process_child("t", "transient"), process_child("tmp", "temporary")]),
            name="sup",
        )
        first = await pids(sup)
        assert first["t"] is not None and first["tmp"] is not None
        os.kill(first["t"], signal.SIGKILL)  # abnormal: a transient child is restarted
        await wait_restarted(sup, "t", first["t"])
        os.kill(first["tmp"], signal.SIGKILL)  # a temporary child is not
        tmp_ref = await sup.ask(GetChild("tmp"))
        assert await tmp_ref.join() is not None
        infos = {i.name: i for i in await sup.ask(WhichChildren())}
        assert not infos["tmp"].running and infos["tmp"].restarts == 0


class Crashy(Actor):
    """Crashes on "crash"; records each start time in a shared list."""

    def __init__(self, starts: list[float]) -> None:
        self.starts = starts

    async def on_start(self) -> None:
        self.starts.append(trio.current_time())

    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash on request")
        return "ok"


async def crash_and_wait(child: Ref, starts: list[float]) -> None:
    count = len(starts)
    await child.tell("crash")
    while len(starts) == count:
        await trio.sleep(0.001)


async def test_backoff_grows_caps_and_resets_on_the_autojump_clock(autojump_clock: trio.abc.Clock) -> None:
    starts: list[float] = []
    async with open_system() as system:
        sup = await system.spawn(
            lambda: Supervisor(
                [ChildSpec(name="c", factory=lambda: Crashy(starts))],
                max_restarts=100,
                within=1000.0,
                backoff_initial=1.0,
                backoff_factor=2.0,
                backoff_max=5.0,
                reset_after=60.0,
            ),
            name="sup",
        )
        child = await sup.ask(GetChild("c"))
        for _ in range(5):
            await crash_and_wait(child, starts)
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(starts)]
        assert gaps == [1.0, 2.0, 4.0, 5.0, 5.0]  # doubling, capped at backoff_max
        # A healthy period longer than reset_after: the next restart is quick again.
        await trio.sleep(61)
        await crash_and_wait(child, starts)
        assert round(starts[-1] - starts[-2], 2) == 61.0 + 1.0


async def test_intensity_exceeded_escalates_to_the_parent_supervisor(autojump_clock: trio.abc.Clock) -> None:
    starts: list[float] = []
    inner_spec = ChildSpec(
        name="inner",
        factory=lambda: Supervisor(
            [ChildSpec(name="c", factory=lambda: Crashy(starts))],
            max_restarts=2,
            within=10.0,
            backoff_initial=0.1,
        ),
    )
    async with open_system() as system:
        outer = await system.spawn(
            lambda: Supervisor([inner_spec], max_restarts=5, within=100.0), name="outer"
        )
        inner = await outer.ask(GetChild("inner"))
        child = await inner.ask(GetChild("c"))
        for _ in range(2):
            await crash_and_wait(child, starts)
        # The third failure within 10 s is one too many for the inner supervisor: it stops its
        # child and fails; the outer supervisor restarts it (with a fresh child).
        infos_before = (await outer.ask(WhichChildren()))[0]
        await child.tell("crash")
        with trio.fail_after(60):
            while (await outer.ask(WhichChildren()))[0].restarts == infos_before.restarts:
                await trio.sleep(0.01)
        new_inner = await outer.ask(GetChild("inner"))
        assert new_inner is inner  # same Ref, new incarnation
        new_child = await inner.ask(GetChild("c"))
        assert await new_child.ask("ping") == "ok"


async def test_a_top_level_supervisor_that_gives_up_reports_why(autojump_clock: trio.abc.Clock) -> None:
    starts: list[float] = []
    async with open_system() as system:
        sup = await system.spawn(
            lambda: Supervisor(
                [ChildSpec(name="c", factory=lambda: Crashy(starts))], max_restarts=1, within=10.0
            ),
            name="sup",
        )
        child = await sup.ask(GetChild("c"))
        await crash_and_wait(child, starts)
        await child.tell("crash")
        reason = await sup.join()
        assert isinstance(reason, RestartIntensityExceeded)
        assert "restart intensity" in str(reason)


async def test_unresponsive_child_process_is_restarted() -> None:
    options = ProcessOptions(ping_interval=0.1, ping_timeout=0.5, stop_timeout=1.0, term_timeout=1.0)
    async with open_system() as system:
        sup = await system.spawn(
            lambda: Supervisor(
                [ChildSpec(name="w", target="tests.actors.sample_actors:Recorder", options=options)]
            ),
            name="sup",
        )
        before = (await pids(sup))["w"]
        assert before is not None
        os.kill(before, signal.SIGSTOP)
        await wait_restarted(sup, "w", before)


async def test_stopping_the_system_stops_supervised_processes() -> None:
    async with open_system() as system:
        sup = await system.spawn(lambda: Supervisor([process_child("a"), process_child("b")]), name="sup")
        running = await pids(sup)
    for pid in running.values():
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
