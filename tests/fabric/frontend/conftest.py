"""Fixtures for the front end tests: the real API on 127.0.0.1 with a stand-in controller."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fabric.model import build_package
from tests.fabric.frontend.frontend_kit import FIXTURES, Api, open_api


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    """A writable copy of the one-role Hello service folder (2 instances)."""
    return Path(shutil.copytree(FIXTURES / "hello", tmp_path / "hello"))


@pytest.fixture
def hello_package(hello: Path, tmp_path: Path) -> bytes:
    """The Hello service packed as a .cspkg."""
    out = tmp_path / "hello.cspkg"
    build_package(hello, out)
    return out.read_bytes()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """The API with a stand-in controller that finishes operations at once."""
    async with open_api(tmp_path / "state") as served:
        yield served


@pytest.fixture
async def slow_api(tmp_path: Path) -> AsyncIterator[Api]:
    """The API with a stand-in controller whose operations stay InProgress until finished."""
    async with open_api(tmp_path / "state", auto_finish=False) as served:
        yield served
