"""Process actors forked from a warm template that already runs as their user in their sandbox."""

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

from actors import ProcessExited, ProcessOptions, Sandbox, Template, command_line, open_system
from actors._zygote import _is_new_child
from tests.actors import sample_actors
from tests.actors.sample_actors import Add, Inspect, Pid

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        os.geteuid() != 0 or not sys.platform.startswith("linux"),
        reason="switching users needs root on Linux",
    ),
]

USER = 65534  # nobody


def _memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any writable mapping of process ``pid`` holds ``needle`` (as root)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except OSError:
                continue
    return False


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


async def test_a_child_forked_from_a_template_is_ours_runs_limited_and_holds_only_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sample_actors, "MARKER", "the parent's secret")
    tmp_path.chmod(0o755)  # the sandbox binds it back; the user must still be let in
    workdir = tmp_path / "work"
    workdir.mkdir()
    sandbox = Sandbox(hide=(str(tmp_path / "hidden"),), writable=(str(tmp_path),))
    (tmp_path / "hidden").mkdir()
    async with open_system() as system:
        template = await Template.start(
            "SampleTemplate", run_as=USER, sandbox=sandbox, preload=["tests.actors.sample_actors"]
        )
        try:
            options = ProcessOptions(
                run_as=USER,
                sandbox=sandbox,
                template=template,
                log_path=tmp_path / "child.log",
                cwd=workdir,
                env={"SAMPLE_SETTING": "42", "SAMPLE_SECRET": "only-for-the-child-" + "7f3a9c"},
                new_session=True,
            )
            ref = await system.spawn_process(
                "tests.actors.sample_actors:Recorder", name="limited", options=options
            )
            assert template.forks == 1
            pid = await ref.ask(Pid())
            assert ref.pid == pid
            child = psutil.Process(pid)
            # Ours, not the template's: we reap it, and its death signal follows us.
            assert child.ppid() == os.getpid()
            assert os.getpgid(pid) == pid  # its own process group, as new_session asks
            status = _status(pid)
            assert status["Uid"].split() == [str(USER)] * 4
            assert all(int(status[c], 16) == 0 for c in ("CapInh", "CapPrm", "CapEff", "CapAmb"))
            assert status["NoNewPrivs"] == "1"
            # In the template's sandbox (a mount namespace of its own), not ours.
            assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(f"/proc/{template.pid}/ns/mnt")
            assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            seen = await ref.ask(Inspect())
            assert seen["marker"] == "pristine"  # a fresh interpreter's memory, not ours
            assert seen["env"] == "42" and seen["cwd"] == str(workdir) and seen["path0"] == str(workdir)
            assert str(tmp_path / "child.log") in seen["fds"]
            args = command_line(child.cmdline())
            assert args[1:3] == ["-m", "actors._child"] and args[6:8] == ["limited", str(USER)]
            # The template never holds the child's environment: not in its own, not in memory.
            assert b"SAMPLE_SETTING" not in Path(f"/proc/{template.pid}/environ").read_bytes()
            assert _memory_holds(pid, b"only-for-the-child-7f3a9c")
            assert not _memory_holds(template.pid, b"only-for-the-child-7f3a9c")
            assert await ref.ask(Add(2)) == 2
            await ref.stop()
        finally:
            await template.close()


async def test_a_killed_child_is_forked_again_and_a_dead_template_falls_back_to_exec(tmp_path: Path) -> None:
    async with open_system() as system:
        template = await Template.start("SampleTemplate", run_as=USER, sandbox=Sandbox(), preload=[])
        try:
            options = ProcessOptions(run_as=USER, sandbox=Sandbox(), template=template)
            ref = await system.spawn_process(
                "tests.actors.sample_actors:Recorder", name="one", options=options
            )
            first = await ref.ask(Pid())
            os.kill(first, signal.SIGKILL)
            assert isinstance(await ref.join(), ProcessExited)
            again = await system.spawn_process(
                "tests.actors.sample_actors:Recorder", name="two", options=options
            )
            assert template.forks == 2
            assert psutil.Process(await again.ask(Pid())).ppid() == os.getpid()
            os.kill(template.pid, signal.SIGKILL)
            await template.process.wait()
            assert not template.alive
            execd = await system.spawn_process(
                "tests.actors.sample_actors:Recorder", name="three", options=options
            )
            assert template.forks == 2
            assert await execd.ask(Add(3)) == 3
        finally:
            await template.close()


async def test_a_forked_child_dies_with_the_parent_and_the_template_with_it(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import anyio
            from actors import ProcessOptions, Sandbox, Template, open_system
            from tests.actors.sample_actors import Pid

            async def main():
                async with open_system() as system:
                    template = await Template.start("T", run_as={USER}, sandbox=Sandbox(), preload=[])
                    options = ProcessOptions(run_as={USER}, sandbox=Sandbox(), template=template)
                    ref = await system.spawn_process(
                        "tests.actors.sample_actors:Recorder", name="c", options=options
                    )
                    child = await ref.ask(Pid())
                    open({str(pids_file)!r}, "w").write(f"{{child}} {{template.pid}}")
                    await anyio.sleep_forever()

            anyio.run(main, backend="trio")
            """
        )
    )
    root = str(Path(__file__).resolve().parents[2])
    parent = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": root})
    try:
        with anyio.fail_after(30):
            while not (pids_file.exists() and pids_file.read_text()):
                await anyio.sleep(0.05)
        child, template = map(int, pids_file.read_text().split())
        assert psutil.Process(child).ppid() == parent.pid
        parent.kill()
        parent.wait()
        for pid in (child, template):
            with anyio.fail_after(10):
                while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    await anyio.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()


def test_only_a_child_of_ours_running_as_the_user_is_taken_from_a_template() -> None:
    assert not _is_new_child(os.getpid(), USER)
    assert not _is_new_child(1, USER)
    sleeper = subprocess.Popen(["sleep", "30"])  # ours, but root's
    try:
        assert not _is_new_child(sleeper.pid, USER)
        assert _is_new_child(sleeper.pid, 0)
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_a_seeding_template_gives_a_child_a_seed_that_becomes_its_child_and_then_its_template() -> None:
    """The chain a host's VMs are made by: a root template exec'd once, a first process forked
    from it, its child made from the seed it planted at birth, and that child's template made
    from the seed the child planted at its own birth; none holds what came after its birth."""
    from tests.actors.seed_actors import StartChild, StartTemplate

    async with open_system() as system:
        guest = await Template.start(
            "GuestTemplate",
            run_as=os.geteuid(),
            sandbox=None,
            preload=["tests.actors.seed_actors"],
            seeds=True,
        )
        try:
            first = await system.spawn_process(
                "tests.actors.seed_actors:First",
                name="first",
                args=("first-secret-" + "5d1e",),
                options=ProcessOptions(template=guest, new_session=True),
            )
            assert guest.forks == 1
            first_pid = await first.ask(Pid())
            assert psutil.Process(first_pid).ppid() == os.getpid()  # ours, not the template's
            assert os.getpgid(first_pid) == first_pid
            made = await first.ask(StartChild("child-secret-" + "8b2c"))
            child = made["child"]
            # The seed became the child itself: no interpreter, no fork at spawn time.
            assert child == made["seed"] and made["forks"] == 1 and not made["again"]
            assert psutil.Process(child).ppid() == first_pid
            assert os.getpgid(child) == first_pid  # in the first process's session and group
            args = command_line(psutil.Process(child).cmdline())
            assert args[1:3] == ["-m", "actors._child"] and args[6] == "Child"
            adopted = await first.ask(StartTemplate(USER))
            template, limited = adopted["template"], adopted["limited"]
            assert adopted["forks"] == 1
            assert psutil.Process(template).ppid() == child and psutil.Process(limited).ppid() == child
            for pid in (template, limited):
                assert _status(pid)["Uid"].split() == [str(USER)] * 4
                assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            assert command_line(psutil.Process(template).cmdline())[1:3] == ["-m", "actors._template"]
            # Each was planted before its parent was given its secret.
            assert _memory_holds(first_pid, b"first-secret-5d1e")
            assert not _memory_holds(child, b"first-secret-5d1e")
            assert _memory_holds(child, b"child-secret-8b2c")
            assert not _memory_holds(template, b"child-secret-8b2c")
            assert not _memory_holds(template, b"first-secret-5d1e")
            await first.stop()
            for pid in (child, template, limited):
                with anyio.fail_after(10):
                    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                        await anyio.sleep(0.05)
        finally:
            await guest.close()
