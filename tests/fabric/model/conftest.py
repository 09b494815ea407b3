"""Fixtures for the service model tests: a writable copy of the Shop service."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

Edit = Callable[[Path, str, str], None]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A fresh copy of the Shop service folder (web role with sites, worker with every endpoint)."""
    return Path(shutil.copytree(FIXTURES / "shop", tmp_path / "shop"))


@pytest.fixture
def shop_toml(tmp_path: Path) -> Path:
    """The Shop service in the TOML form, with the same role folders."""
    root = Path(shutil.copytree(FIXTURES / "shop", tmp_path / "shop_toml"))
    for name in (
        "ServiceDefinition.csdef",
        "ServiceConfiguration.Local.cscfg",
        "ServiceConfiguration.Cloud.cscfg",
    ):
        (root / name).unlink()
    shutil.copy(FIXTURES / "shop.service.toml", root / "service.toml")
    shutil.copy(FIXTURES / "shop.config.local.toml", root / "config.local.toml")
    return root


@pytest.fixture
def edit() -> Edit:
    """Replace exactly one occurrence of `old` by `new` in a file (the edit must apply)."""

    def apply(path: Path, old: str, new: str) -> None:
        text = path.read_text(encoding="utf-8")
        assert text.count(old) >= 1, f"{old!r} not in {path.name}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    return apply
