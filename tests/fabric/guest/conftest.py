"""Make the guest test helpers importable; the ``make_vm`` fixture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.model.definition import RoleDefinition
from tests.fabric.guest.guest_kit import Vm


@pytest.fixture
def make_vm(tmp_path: Path) -> Callable[[RoleDefinition], Vm]:
    """Build a VM folder for a role under tmp_path."""

    def make(role: RoleDefinition) -> Vm:
        return Vm(tmp_path / "vms" / f"{role.name}_IN_0", role)

    return make
