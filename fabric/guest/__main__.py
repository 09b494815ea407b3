"""``python -m fabric.guest``: boot one VM from a service, without the control plane."""

from __future__ import annotations

from fabric.commands.guest import guest

if __name__ == "__main__":
    guest(prog_name="python -m fabric.guest")
