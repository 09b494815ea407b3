"""The README's Quick start and CI agree: CI runs the README's test command as written."""

from __future__ import annotations

import re

from tests.paths import ROOT


def quick_start_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the Quick start has a ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_has_exactly_two_commands() -> None:
    lines = quick_start_lines()
    assert len(lines) == 2
    assert "fabric run examples/" in lines[0] or "fabric --version" in lines[0]
    assert "pytest" in lines[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert quick_start_lines()[1] in ci.splitlines()
