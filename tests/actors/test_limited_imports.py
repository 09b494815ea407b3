"""A child that runs as another account (a VM's limited role host) is untrusted: the type names
of its answers cannot make its parent, root, import a module (an import runs the module's code:
stdlib `venv.__main__` makes folders in the parent's working folder, `test.__main__` runs
CPython's test suite), as a node on the network cannot."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from actors import ActorError, AskTimeout, ProcessOptions, Sandbox, open_system
from tests.actors.probe_actor import Status

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        os.geteuid() != 0 or sys.platform != "linux", reason="changing users needs root on Linux"
    ),
]

UID = 65004


async def test_a_limited_childs_answer_cannot_make_its_parent_import_a_module(tmp_path: Path) -> None:
    # Another test may have imported it already: take it out for this test, put it back after.
    saved = sys.modules.pop("colorsys", None)
    try:
        await _ask_the_forger(tmp_path)
        assert "colorsys" not in sys.modules
    finally:
        if saved is not None:
            sys.modules["colorsys"] = saved


async def _ask_the_forger(tmp_path: Path) -> None:
    async with open_system() as system:
        ref = await system.spawn_process(
            "tests.actors.forging_actor:Forger",
            name="limited",
            options=ProcessOptions(run_as=UID, sandbox=Sandbox(), log_path=tmp_path / "child.log"),
        )
        with pytest.raises((ActorError, AskTimeout)):  # the answer is refused, not decoded
            await ref.ask(Status(), timeout=3)
