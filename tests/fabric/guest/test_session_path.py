"""A remote session's ``python`` is the fabric's own interpreter (what the role runs with), as
the README's `fabric exec ... -- python manage.py migrate` expects, whatever else is on PATH."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

from fabric.guest.disk import VmDisk
from fabric.guest.plugin_agents.remote_exec import Vm, run_session


@pytest.mark.timeout(30)
async def test_python_in_a_session_is_the_fabrics_interpreter(tmp_path: Path, monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere"  # a machine whose PATH names another python first
    elsewhere.mkdir()
    (elsewhere / "python").write_text("#!/bin/sh\necho not-ours\n")
    (elsewhere / "python").chmod(0o755)
    monkeypatch.setenv("PATH", f"{elsewhere}:/usr/bin:/bin")
    disk = VmDisk(tmp_path / "vm", "d" * 32, "Web", "svc.dep.Web_IN_0")
    disk.approot.mkdir(parents=True)
    vm = Vm(disk=disk, uid=None, state_dir="", instance_id="Web_IN_0")
    answer = await run_session(vm, ["python", "-c", "import sys; print(sys.prefix)"], timeout=20)
    out = base64.b64decode(answer["stdout"]).decode().strip()
    assert (answer["exit_status"], out) == (0, sys.prefix), base64.b64decode(answer["stderr"])
    assert vm.environment()["PATH"].split(":")[1:] == [str(elsewhere), "/usr/bin", "/bin"]
