"""Fixtures for the controller tests: a Demo service factory, stand-in hosts, a state folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.append(HERE)  # appended: other folders import their own "conftest" by name

from controller_kit import ServiceFactory  # noqa: E402
from controller_standin import World  # noqa: E402


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
