"""End to end, real processes: a role writing its stdout without end cannot grow its log past
role_log_max_bytes: the older part is dropped, a line says so, the newest lines stay."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fabric.guest.log_files import vm_logs
from fabric.settings import Settings
from tests.integration.e2e_kit import running_fabric

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

LIMIT = 256 * 1024
DEFINITION = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="Loud" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WorkerRole name="Loud" vmsize="ExtraSmall">
    <Runtime><EntryPoint><NetFxEntryPoint assemblyName="role.py" /></EntryPoint></Runtime>
  </WorkerRole>
</ServiceDefinition>
"""
CONFIGURATION = """<?xml version="1.0" encoding="utf-8"?>
<ServiceConfiguration serviceName="Loud" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">
  <Role name="Loud"><Instances count="1" /></Role>
</ServiceConfiguration>
"""
#: 6.4 MB of numbered lines (16 bytes each) to stdout, a little at a time, then "done".
ROLE = """
import sys

import anyio

from roles import RoleEntryPoint


class Loud(RoleEntryPoint):
    async def run(self) -> None:
        for block in range(400):
            sys.stdout.write("".join(f"line {block * 1000 + n:07d} {'x' * 2}\\n" for n in range(1000)))
            sys.stdout.flush()
            await anyio.sleep(0.005)
        print("done", flush=True)
        await anyio.sleep_forever()
"""


async def test_a_roles_stdout_log_is_kept_under_the_limit(tmp_path: Path) -> None:
    service = tmp_path / "Loud"
    (service / "Loud").mkdir(parents=True)
    (service / "ServiceDefinition.csdef").write_text(DEFINITION)
    (service / "ServiceConfiguration.Local.cscfg").write_text(CONFIGURATION)
    (service / "Loud" / "role.py").write_text(textwrap.dedent(ROLE))
    async with running_fabric(tmp_path, Settings.fast(role_log_max_bytes=LIMIT)) as fab:
        name, _ = await fab.deploy(service)
        await fab.all_ready(name, 1)
        (vm,) = (fab.state_dir / "vms").glob("*.Loud_IN_0")

        def capped() -> bytes | None:
            log = vm_logs(vm).get("stdout")
            text = log.read_bytes() if log is not None else b""
            return text if text.endswith(b"done\n") and len(text) <= LIMIT else None

        text = await fab.wait_until(capped, 60)
        first, *lines = text.decode().splitlines()
        assert first.startswith("[") and "bytes of older output dropped here" in first, first
        numbers = [int(line.split()[1]) for line in lines if line.startswith("line ")]
        # The newest lines, in order (a write racing a cut may be lost whole: see log_caps).
        assert numbers[-1] == 399_999 and numbers == sorted(set(numbers))
        assert len(numbers) * 16 > LIMIT // 2 - 100  # at least about half the limit kept (16 bytes a line)
        assert lines[-1] == "done"
