"""`fabric chaos kill` of a role host says how the bootstrapper restarts it: at once after a
healthy run, later when it failed again within role_restart_reset (restarts back off)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.settings import Settings
from tests.fabric.chaos.chaos_kit import guestbook
from tests.fabric.chaos.test_faults import chaos_cli


@pytest.mark.timeout(120)
async def test_a_role_host_kill_says_when_and_why_it_restarts(tmp_path: Path) -> None:
    settings = Settings.fast(role_restart_reset=300.0, role_restart_initial=0.3)
    async with guestbook(tmp_path / "state", settings) as book:
        outs = []
        for _ in range(2):
            old = next(i for i in (await book.targets()).instances if i.id == "Web_IN_1").processes[
                "role-host"
            ]
            code, out, err = await chaos_cli(book, "kill", "--target", "role-host", "--instance", "Web_IN_1")
            assert code == 0, err
            outs.append(out)
            await book.until(
                lambda t, old=old: any(
                    i.id == "Web_IN_1"
                    and i.status == "ReadyRole"
                    and i.processes.get("role-host") not in (None, old)
                    for i in t.instances
                )
            )
        first, second = outs
        # a first failure after a healthy run: restarted at once
        assert "then Web_IN_1 is RestartingRole" in first and "in 0.00 s (1 failure in a row)" in first, first
        # the second within role_restart_reset: the restart waits, and the output says why
        assert "in 0.30 s (2 failures in a row" in second and "restarts back off" in second, second
