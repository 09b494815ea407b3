"""Fixtures of the portal tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fabric.frontend.frontend_kit import FIXTURES


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    """A writable copy of the front end tests' one-role Hello service (2 instances)."""
    return Path(shutil.copytree(FIXTURES / "hello", tmp_path / "hello"))
