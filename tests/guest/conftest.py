"""Make the guest test helpers importable; the ``make_vm`` fixture."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from guest_kit import Vm  # noqa: E402

from fabric.model.definition import RoleDefinition  # noqa: E402


@pytest.fixture
def make_vm(tmp_path: Path) -> Callable[[RoleDefinition], Vm]:
    """Build a VM folder for a role under tmp_path."""

    def make(role: RoleDefinition) -> Vm:
        return Vm(tmp_path / "vms" / f"{role.name}_IN_0", role)

    return make
