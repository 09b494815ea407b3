"""Fixtures for the controller tests: a Demo service factory, stand-in hosts, a state folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fabric.controller.controller_kit import ServiceFactory
from tests.fabric.controller.controller_standin import World


@pytest.fixture
def service(tmp_path: Path) -> ServiceFactory:
    """Builds Demo service folders under tmp_path."""
    return ServiceFactory(tmp_path / "services")


@pytest.fixture
def world() -> World:
    """The stand-in hosts' shared state."""
    return World()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """The fabric's state folder."""
    return tmp_path / "state"
