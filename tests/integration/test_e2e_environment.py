"""A VM's processes do not get the fabric's own environment: whatever the operator exported
when starting the fabric (a PGPASSWORD, a cloud key) stays out of reach of the roles, which see
the machine's basics (PATH, the locale, the fabric's own REDDOG_ knobs) and their
RoleEnvironment variables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.e2e_kit import running_fabric
from tests.integration.test_e2e_isolation import make_service

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ROLE = """
import json
import os
from pathlib import Path

from roles import RoleEntryPoint, RoleEnvironment


class Dump(RoleEntryPoint):
    async def on_start(self) -> bool:
        root = Path(RoleEnvironment.get_local_resource("Data").root_path)
        (root / "env.json").write_text(json.dumps(dict(os.environ)))
        return True
"""


async def test_a_role_sees_none_of_the_fabrics_own_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", "operator-secret-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret-2")
    service = make_service(tmp_path, "Dump", {"role.py": ROLE})
    async with running_fabric(tmp_path) as fab:
        name, _ = await fab.deploy(service)
        await fab.all_ready(name, 1)
        storage = next((fab.state_dir / "vms").rglob("*.Dump.Data"))
        seen = json.loads((storage / "env.json").read_text())
    assert [k for k, v in seen.items() if "operator-secret" in v] == []
    assert seen["PATH"] and seen["TEMP"]
