"""Process actors started by fork: a copy of the parent that keeps none of the parent's business."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path

import psutil
import pytest

from actors import ProcessExited, ProcessOptions, Sandbox, command_line, open_system
from tests.actors import sample_actors
from tests.actors.sample_actors import Add, AtExit, Inspect, SysExit

pytestmark = pytest.mark.timeout(60)


async def test_a_forked_child_keeps_only_its_own_files_and_shows_its_command_line(tmp_path: Path) -> None:
    secret = tmp_path / "parent-only.txt"
    workdir = tmp_path / "work"
    workdir.mkdir()
    options = ProcessOptions(log_path=tmp_path / "child.log", cwd=workdir, env={"SAMPLE_SETTING": "42"})
    with secret.open("w"):
        async with open_system() as system:
            first = await system.spawn_process("tests.actors.sample_actors:Recorder", name="first")
            second = await system.spawn_process(
                "tests.actors.sample_actors:Recorder", name="second", options=options
            )
            seen = await second.ask(Inspect())
            ours = {os.readlink(f"/proc/self/fd/{fd}") for fd in _open_fds()}
            assert second.pid is not None
            cmdline = command_line(psutil.Process(second.pid).cmdline())
            assert await first.ask(Add(1)) == 1
    assert str(secret) not in seen["fds"]  # open in the parent, not passed
    # Its sockets are its own (its end of its link, its event loop's): none is one of ours,
    # such as our end of its link or of the first child's, which would keep them from closing.
    assert not {t for t in seen["fds"] if t.startswith("socket:")} & ours
    assert str(tmp_path / "child.log") in seen["fds"]
    assert seen["cwd"] == str(workdir)
    assert seen["path0"] == str(workdir)  # as `python -m` puts it
    assert seen["env"] == "42"
    assert cmdline[1:3] == ["-m", "actors._child"] and cmdline[6] == "second"
    assert "inspected" in (tmp_path / "child.log").read_text()


async def test_the_parents_log_handlers_stay_with_the_parent(tmp_path: Path) -> None:
    parent_log = tmp_path / "parent.log"
    handler = logging.FileHandler(parent_log)
    logging.getLogger().addHandler(handler)
    try:
        async with open_system() as system:
            ref = await system.spawn_process(
                "tests.actors.sample_actors:Recorder",
                name="child",
                options=ProcessOptions(log_path=tmp_path / "child.log"),
            )
            await ref.ask(Inspect())
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert "inspected" not in parent_log.read_text()
    assert "inspected" in (tmp_path / "child.log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_a_child_that_changes_user_starts_from_a_fresh_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A limited role must not begin life with a copy of a privileged parent's memory."""
    monkeypatch.setattr(sample_actors, "MARKER", "the parent's secret")
    async with open_system() as system:
        forked = await system.spawn_process("tests.actors.sample_actors:Recorder", name="forked")
        limited = await system.spawn_process(
            "tests.actors.sample_actors:Recorder",
            name="limited",
            options=ProcessOptions(run_as="nobody", sandbox=Sandbox()),
        )
        assert (await forked.ask(Inspect()))["marker"] == "the parent's secret"
        assert (await limited.ask(Inspect()))["marker"] == "pristine"


async def test_spawning_can_be_told_to_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORS_SPAWN", "exec")
    monkeypatch.setattr(sample_actors, "MARKER", "only in the parent")
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name="execd")
        assert (await ref.ask(Inspect()))["marker"] == "pristine"


def _open_fds() -> list[int]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        if os.path.exists(f"/proc/self/fd/{name}"):
            fds.append(int(name))
    return fds


async def test_a_forked_child_ends_as_an_interpreter_would(tmp_path: Path) -> None:
    """Its own exit handlers run (not the parent's), and a SystemExit ends it with the code an
    exec'd child ends with."""
    parent_handler_ran = tmp_path / "parent-handler"
    atexit.register(parent_handler_ran.write_text, "the parent's handler ran in a child")
    try:
        async with open_system() as system:
            polite = await system.spawn_process("tests.actors.sample_actors:Recorder", name="polite")
            await polite.ask(AtExit(str(tmp_path / "bye"), "goodbye"))
            assert await polite.stop() is None
            codes = []
            for options in (None, ProcessOptions(python=sys.executable)):  # forked, exec'd
                leaving = await system.spawn_process(
                    "tests.actors.sample_actors:Recorder", name="leaving", options=options
                )
                await leaving.tell(SysExit(3))
                reason = await leaving.join()
                assert isinstance(reason, ProcessExited)
                codes.append(reason.returncode)
    finally:
        atexit.unregister(parent_handler_ran.write_text)
    assert (tmp_path / "bye").read_text() == "goodbye"
    assert not parent_handler_ran.exists()
    assert codes[0] == codes[1] != 0


async def test_a_command_line_too_long_to_show_after_a_fork_is_exec_d(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A forked child shows its command line in the memory that held the first process's
    arguments and environment; a name that does not fit there must not be cut (chaos tools
    find processes by it): that child is exec'd instead."""
    from actors._fork import _title_room

    monkeypatch.setattr(sample_actors, "MARKER", "only in the parent")
    name = "n" * (_title_room() + 1)
    async with open_system() as system:
        ref = await system.spawn_process("tests.actors.sample_actors:Recorder", name=name)
        seen = await ref.ask(Inspect())
        assert ref.pid is not None
        cmdline = command_line(psutil.Process(ref.pid).cmdline())
    assert seen["marker"] == "pristine"  # a fresh interpreter
    assert cmdline[6] == name
