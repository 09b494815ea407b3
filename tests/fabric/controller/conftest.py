"""Fixtures for the controller tests: a Demo service factory, stand-in hosts, a state folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fabric.controller.controller_kit import ServiceFactory
from tests.fabric.controller.controller_standin import World
from tests.pg_server import PostgresServer, missing_reason


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


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server in a temporary folder, stopped (and removed) at the end."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with PostgresServer.start() as server:
        yield server
