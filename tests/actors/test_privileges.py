"""A process actor run as another user keeps no capability and sees only its sandbox (real processes, as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from actors import ProcessExited, ProcessOptions, Sandbox, open_system
from actors._privileges import unreachable_by
from actors._sandbox import interpreter_paths
from tests.actors.probe_actor import Probe, Status

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        os.geteuid() != 0 or sys.platform != "linux", reason="changing users needs root on Linux"
    ),
]

#: An account with no entry in /etc/passwd, as a VM's is.
UID = 65001


async def test_a_limited_child_keeps_no_capability_and_sees_only_its_sandbox(tmp_path: Path) -> None:
    secrets = tmp_path / "state"
    secrets.mkdir()
    (secrets / "token").write_text("the fabric's token")
    os.chmod(secrets / "token", 0o644)  # even a readable file is out of reach once hidden
    own = secrets / "own"
    own.mkdir()
    os.chown(own, UID, UID)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # anyone may write here, but it is bound read-only
    sandbox = Sandbox(hide=(str(secrets),), read_only=(str(shared),), writable=(str(own),))
    tries = [
        ("read", str(secrets / "token")),
        ("entries", str(secrets)),
        ("write", str(own / "data")),
        ("write", str(shared / "forged")),
        ("read", "/etc/shadow"),
        ("mount", "/"),
        ("mount", "/etc"),
        ("write", "/tmp/scratch"),
        ("entries", "/root"),
    ]
    async with open_system() as system:
        ref = await system.spawn_process(
            "tests.actors.probe_actor:Prober",
            name="limited",
            options=ProcessOptions(run_as=UID, sandbox=sandbox, log_path=tmp_path / "child.log"),
        )
        status = await ref.ask(Status())
        found = await ref.ask(Probe(tries))
    assert status["Uid"].split() == [str(UID)] * 4 and status["Gid"].split() == [str(UID)] * 4
    assert {
        name: int(value, 16) for name, value in status.items() if name.startswith("Cap") and name != "CapBnd"
    } == {
        "CapInh": 0,
        "CapPrm": 0,
        "CapEff": 0,
        "CapAmb": 0,
    }
    assert status["NoNewPrivs"] == "1"
    root_entries = found.pop("entries /root")
    assert found == {
        f"read {secrets / 'token'}": "ENOENT",
        f"entries {secrets}": "own",
        f"write {own / 'data'}": "ok",
        f"write {shared / 'forged'}": "EROFS",
        "read /etc/shadow": "EACCES",
        "mount /": "ro",
        "mount /etc": "ro",
        "write /tmp/scratch": "ok",
    }
    assert (own / "data").read_text() == "forged\n"
    assert not Path("/tmp/scratch").exists()  # its /tmp was its own
    # /root shows at most the way to the interpreter, nothing else of root's.
    assert set(root_entries.split(",")) - {""} <= {
        p.split("/")[2] for p in interpreter_paths() if p.startswith("/root/")
    }


async def test_without_a_sandbox_an_interpreter_the_user_cannot_read_is_refused(tmp_path: Path) -> None:
    blocked = unreachable_by(interpreter_paths(), UID, UID)
    if blocked is None:
        pytest.skip("this interpreter is readable by everyone: nothing to refuse")
    log = tmp_path / "child.log"
    async with open_system() as system:
        with pytest.raises(ProcessExited):
            await system.spawn_process(
                "tests.actors.probe_actor:Prober",
                name="limited",
                options=ProcessOptions(run_as=UID, log_path=log),
            )
    assert f"cannot read {blocked}" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_unreachable_by_names_the_first_folder_the_user_cannot_enter() -> None:
    # Under a folder everyone may enter (pytest's own temporary folders are root's only).
    top = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        inner = top / "outer" / "inner"
        inner.mkdir(parents=True)
        (inner / "lib.py").write_text("")
        for path, mode in ((top, 0o755), (top / "outer", 0o700), (inner, 0o755)):
            os.chmod(path, mode)
        assert unreachable_by([str(inner / "lib.py")], UID, UID) == str(top / "outer")
        os.chown(top / "outer", 0, UID)
        os.chmod(top / "outer", 0o750)  # its group may enter
        assert unreachable_by([str(inner / "lib.py")], UID, UID) is None
        assert unreachable_by([str(inner / "lib.py")], UID + 1, UID + 1) == str(top / "outer")
    finally:
        shutil.rmtree(top)


async def test_the_parents_import_path_does_not_open_its_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python -m ...` puts its working folder on the import path, which children inherit.
    home = tmp_path / "home-of-whoever-started-it"
    home.mkdir()
    (home / "notes.txt").write_text("private")
    monkeypatch.syspath_prepend(str(home))
    async with open_system() as system:
        ref = await system.spawn_process(
            "tests.actors.probe_actor:Prober",
            name="limited",
            options=ProcessOptions(run_as=UID, sandbox=Sandbox(), log_path=tmp_path / "child.log"),
        )
        found = await ref.ask(Probe([("read", str(home / "notes.txt"))]))
    assert found == {f"read {home / 'notes.txt'}": "ENOENT"}


FALLBACK = """
import sys
import actors._privileges as privileges
from actors._sandbox import Sandbox, SandboxUnavailable

def no_namespaces(sandbox):
    raise SandboxUnavailable(1, "Operation not permitted")

privileges.enter_sandbox = no_namespaces
try:
    privileges.drop_privileges({uid}, Sandbox(writable=({writable!r},)))
except privileges.PrivilegeError as exc:
    print("refused:", exc)
    sys.exit(2)
print("ran as", privileges.os.getuid(), privileges.capabilities())
"""


def run_without_namespaces(writable: Path) -> subprocess.CompletedProcess[str]:
    """A child that cannot make a mount namespace drops to UID with ``writable`` as its data."""
    script = FALLBACK.format(uid=UID, writable=str(writable))
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )


def test_without_namespaces_limited_code_is_refused_naming_what_it_cannot_read(tmp_path: Path) -> None:
    data = tmp_path / "data"  # under pytest's folders, which are root's alone
    data.mkdir()
    blocked = unreachable_by([*interpreter_paths(), str(data)], UID, UID)
    assert blocked is not None
    done = run_without_namespaces(data)
    assert done.returncode == 2, done.stderr
    assert done.stdout.startswith(f"refused: cannot run limited code as uid {UID}: Operation not permitted")
    assert f"cannot read {blocked}; make it readable" in done.stdout
    assert len(done.stdout.strip().splitlines()) == 1


def test_without_namespaces_limited_code_that_can_read_what_it_needs_runs_with_a_warning() -> None:
    if unreachable_by(interpreter_paths(), UID, UID) is not None:
        pytest.skip("this interpreter is not readable by everyone (it would be refused, as above)")
    data = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        os.chmod(data, 0o755)
        done = run_without_namespaces(data)
    finally:
        shutil.rmtree(data)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"ran as {UID}") and "'CapEff': 0" in done.stdout
    assert "without a private filesystem view" in done.stderr
