"""Process actors: real child processes behind a Ref that behaves like a local one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import psutil
import pytest

from actors import (
    Actor,
    ActorDead,
    ActorError,
    AskTimeout,
    LinkFaults,
    ProcessExited,
    ProcessOptions,
    Sandbox,
    Unresponsive,
    open_system,
)
from actors._wire import Kind, append_frame
from tests.actors.sample_actors import Add, AskParent, Block, Exit, Fail, Get, Pid, Print, Tell
from tests.paths import ROOT

# Each test on trio and on asyncio, through the anyio_backend fixture (tests/conftest.py).
pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


async def wait_gone(pid: int, seconds: float = 20.0) -> None:
    """Poll until the process is gone (or a zombie nobody can run), with a deadline."""
    with anyio.fail_after(seconds):
        while True:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            await anyio.sleep(0.02)


async def test_a_process_actor_runs_in_another_process_and_keeps_order() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="rec", args=("p:",))
        pid = await ref.ask(Pid())
        assert pid == ref.pid != os.getpid()
        for i in range(2000):
            await ref.tell(Add(i))
        state = await ref.ask(Get())
    assert state["seen"] == list(range(2000))
    assert state["prefix"] == "p:"
    await wait_gone(pid)


async def test_a_message_that_cannot_be_encoded_is_refused_and_the_link_goes_on() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="rec", args=("p:",))
        await ref.tell(Add(1))
        for send in (ref.tell, ref.ask):
            with pytest.raises(OverflowError):
                await send(Add(2**70))  # msgpack has no integers that large
        await ref.tell(Add(2))
        # No half frame of the refused ones went out: the frames after them arrive whole.
        assert (await ref.ask(Get()))["seen"] == [1, 2]
        await ref.stop()


async def test_remote_exception_carries_type_message_and_traceback() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="rec")
        with pytest.raises(ActorError) as caught:
            await ref.ask(Fail("remote boom"))
        assert caught.value.type_name == "ValueError"
        assert caught.value.message == "remote boom"
        assert "sample_actors.py" in caught.value.traceback
        assert "raise ValueError(text)" in caught.value.traceback
        assert await ref.ask(Add(1)) == 1  # still serving


async def test_child_talks_to_its_parent_actor() -> None:
    heard: list[str] = []

    class Parent(Actor):
        async def receive(self, message: object) -> object:
            heard.append(str(message))
            return f"yes:{message}"

    async with open_system() as system:
        parent = await system.spawn(Parent, name="parent")
        child = await system.spawn_process("tests.actors.sample_actors:Recorder", name="child", parent=parent)
        await child.ask(Tell("status: ready"))
        assert await child.ask(AskParent("may I?")) == "yes:may I?"
    assert heard == ["status: ready", "may I?"]


async def test_backpressure_across_the_process_boundary() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="rec", mailbox_size=4)
        await ref.tell(Block(0.5))  # the child's actor is stuck; its mailbox fills, then the link
        with anyio.fail_after(20):
            for _i in range(50_000):
                await ref.tell(Add(1))
        assert (await ref.ask(Get()))["total"] == 50_000


async def test_spawn_failures_are_named() -> None:
    async with open_system() as system:
        with pytest.raises(ActorError, match="no database"):
            await system.spawn_process("tests.actors.sample_actors:FailingStart", name="bad")
        with pytest.raises(ActorError, match=r"ModuleNotFoundError|No module named"):
            await system.spawn_process("no_such_module:Thing", name="missing")
        with pytest.raises(ValueError, match=r"package\.module:ClassName"):
            await system.spawn_process("not-a-target", name="wrong")


async def test_output_goes_to_the_named_log_file(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    async with open_system() as system:
        ref = await system.spawn_process(
            "tests.actors.sample_actors:Recorder", name="rec", options=ProcessOptions(log_path=log)
        )
        await ref.ask(Print("hello from the child"))
    text = log.read_text()
    assert "hello from the child" in text
    assert "err:hello from the child" in text


async def test_stop_ladder_ends_in_sigkill_and_reaps() -> None:
    options = ProcessOptions(stop_timeout=0.3, term_timeout=0.3)
    async with open_system() as system:
        ref = await system.spawn_process(
            "tests.actors.sample_actors:StubbornStop", name="stubborn", options=options
        )
        pid = ref.pid
        assert pid is not None
        with anyio.fail_after(20):
            assert await ref.stop() is None
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(pid).status()


async def test_child_exit_is_reported_with_its_code() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="rec")
        await ref.tell(Exit(7))
        reason = await ref.join()
        assert isinstance(reason, ProcessExited)
        assert reason.returncode == 7
        with pytest.raises(ActorDead):
            await ref.ask(Get())


async def test_sigkilled_child_is_a_failure_and_pending_asks_fail() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="rec")
        await ref.tell(Block(5))
        async with anyio.create_task_group() as tg:
            asked = anyio.Event()  # set just before the ask, which is sent before its first wait

            async def asker() -> None:
                asked.set()
                with pytest.raises(ActorDead):
                    await ref.ask(Get())

            tg.start_soon(asker)
            await asked.wait()
            assert ref.pid is not None
            os.kill(ref.pid, signal.SIGKILL)
        reason = await ref.join()
        assert isinstance(reason, ProcessExited)
        assert reason.returncode == -signal.SIGKILL


async def test_stopped_process_is_detected_as_unresponsive() -> None:
    options = ProcessOptions(ping_interval=0.1, ping_timeout=0.5)
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="rec", options=options)
        pid = ref.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        with anyio.fail_after(20):
            reason = await ref.join()
        assert isinstance(reason, Unresponsive)
    await wait_gone(pid)


async def test_malformed_frames_do_not_kill_the_child() -> None:
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="rec")
        outbox = ref._target.outbox  # type: ignore[attr-defined]
        # Garbage msgpack inside a well-formed length prefix.
        garbage = b"\xc1\xc1\xc1"
        outbox.buffer += len(garbage).to_bytes(4, "big") + garbage
        # A message of a type the child cannot import.
        append_frame(outbox.buffer, Kind.TELL, 0, {"x": 1}, name="nowhere.module:Ghost")
        # A body that does not fit its type.
        append_frame(outbox.buffer, Kind.TELL, 0, {"amount": "many"}, name="tests.actors.sample_actors:Add")
        # An ask of an unknown type is answered with an error, not silence.
        with pytest.raises(ActorError, match="unknown message type"):
            await ref.ask(_Ghost())
        assert await ref.ask(Add(3)) == 3
        assert ref.pid is not None


class _Ghost:
    """Encodes as plain data but claims a type the child does not know (see the test above)."""


def _encode_ghost() -> None:
    import msgspec

    from actors import _wire

    _wire._type_names[_Ghost] = "nowhere.module:Ghost"
    original = _wire._encoder

    def enc_hook(obj: object) -> object:
        if isinstance(obj, _Ghost):
            return {}
        raise NotImplementedError

    _wire._encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
    del original


_encode_ghost()


async def test_link_faults_drop_delay_and_cut() -> None:
    async with open_system() as system:
        ref = await system.spawn_process(
            "tests.actors.sample_actors:Recorder", name="rec", options=ProcessOptions(ping_interval=None)
        )
        faults = ref.faults
        assert faults is not None and not faults.active
        faults.cut("out")
        with pytest.raises(AskTimeout):
            await ref.ask(Add(1), timeout=0.3)
        faults.clear()
        assert await ref.ask(Add(1)) == 1  # the cut message was lost, not delayed
        faults.delay(0.2, direction="in")
        start = anyio.current_time()
        await ref.ask(Get())
        assert anyio.current_time() - start >= 0.2
        faults.clear()
        faults.drop(1.0, direction="in")
        with pytest.raises(AskTimeout):
            await ref.ask(Get(), timeout=0.3)
        faults.clear()
        assert (await ref.ask(Get()))["total"] == 1


async def test_cancelling_the_owner_leaves_no_orphan() -> None:
    pids: list[int] = []
    with anyio.move_on_after(30) as outer:
        async with open_system() as system:
            for i in range(3):
                ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name=f"rec{i}")
                assert ref.pid is not None
                pids.append(ref.pid)
            outer.cancel()
            await anyio.sleep_forever()
    assert len(pids) == 3
    for pid in pids:
        await wait_gone(pid)


async def test_killing_the_parent_process_kills_its_children(tmp_path: Path) -> None:
    """A real parent process with a process actor (and that actor's own child): SIGKILL the
    parent and both descendants die with it (PR_SET_PDEATHSIG and EOF on the link)."""
    script = tmp_path / "parent.py"
    pids_file = tmp_path / "pids"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, anyio
            sys.path.insert(0, {str(ROOT)!r})
            from actors import open_system
            from tests.actors.sample_actors import Pid

            async def main():
                async with open_system() as system:
                    ref = await system.spawn_process("tests.actors.sample_actors:Spawner", name="spawner")
                    grandchild = await ref.ask(Pid())
                    open({str(pids_file)!r}, "w").write(f"{{ref.pid}} {{grandchild}}")
                    await anyio.sleep_forever()

            anyio.run(main, backend="trio")
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        with anyio.fail_after(30):
            while not (pids_file.exists() and pids_file.read_text()):
                await anyio.sleep(0.05)
        child, grandchild = map(int, pids_file.read_text().split())
        assert psutil.pid_exists(child) and psutil.pid_exists(grandchild)
        parent.kill()
        parent.wait()
        await wait_gone(child)
        await wait_gone(grandchild)
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_run_as_drops_root_before_the_actor_runs() -> None:
    async with open_system() as system:
        ref = await system.spawn_process(
            "tests.actors.sample_actors:Recorder",
            name="limited",
            options=ProcessOptions(run_as="nobody", sandbox=Sandbox()),
        )
        pid = await ref.ask(Pid())
        uids = psutil.Process(pid).uids()
        assert (uids.real, uids.effective, uids.saved) == (65534, 65534, 65534)
        assert await ref.ask(Add(2)) == 2


async def test_children_are_forked_by_one_long_lived_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* ends, and trio forks in worker threads
    that retire after ten idle seconds, which killed every child ten seconds after its birth.
    Every fork must happen in the runtime's own thread, which lives as long as the process."""
    import threading

    forking_threads: list[threading.Thread] = []
    original_init, original_fork = subprocess.Popen.__init__, os.fork

    def recording_init(self: subprocess.Popen[bytes], *args: object, **kwargs: object) -> None:
        forking_threads.append(threading.current_thread())
        original_init(self, *args, **kwargs)  # type: ignore[arg-type]

    def recording_fork() -> int:
        forking_threads.append(threading.current_thread())
        return original_fork()

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    monkeypatch.setattr(os, "fork", recording_fork)
    exec_options = ProcessOptions(python=sys.executable)  # another interpreter: exec'd, not forked
    async with open_system() as system:
        for i in range(4):
            await system.spawn_process(
                "tests.actors.sample_actors:Recorder", name=f"rec{i}", options=exec_options if i % 2 else None
            )
            await anyio.to_thread.run_sync(lambda: None)  # other work in trio's worker threads
    assert len(forking_threads) == 4
    assert len({t.ident for t in forking_threads}) == 1
    assert forking_threads[0].name.startswith("actors-forker")
    assert forking_threads[0].is_alive()


def test_link_faults_with_the_same_seed_lose_the_same_frames() -> None:
    def losses(seed: int) -> list[float | None]:
        faults = LinkFaults()
        faults.reseed(seed)
        faults.drop(0.5, direction="in")
        faults.delay(0.01, jitter=0.02, direction="in")
        return [faults.decide("in") for _ in range(500)]

    first = losses(3)
    assert first == losses(3) != losses(4)
    assert 150 < first.count(None) < 350  # about half lost
