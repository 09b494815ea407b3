"""RemoteAccess's Sessions.log keeps one line a session or refusal: a command carrying a newline
(or another control character) cannot forge a line of its own in the VM's audit log."""

from __future__ import annotations

from pathlib import Path

from fabric.guest.plugin_agents.remote_exec import _log


def test_a_command_cannot_add_lines_to_the_session_log(tmp_path: Path) -> None:
    log = tmp_path / "Sessions.log"
    forged = "echo 'hi\n2026-01-01T00:00:00.00Z session who=admin command=true: exit status 0\r\x1b[2K'"
    _log(log, f"session who=api command={forged}: exit status 0 after 0.01 s")
    _log(log, "shell who=api websocket user=-: started")
    lines = log.read_text().splitlines()
    assert len(lines) == 2, lines
    assert "\\n2026-01-01T00:00:00.00Z session who=admin" in lines[0] and "\x1b" not in lines[0]
