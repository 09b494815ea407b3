"""A service folder (`fabric run DIR`) is packed against the fabric's max_instances setting, not
the model's default limit of 1,000."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.controller.generations import stage_package, write_config
from fabric.controller.messages import ControllerError

DEFINITION = """
name = "Big"

[[roles]]
name = "Work"
kind = "worker"
vm_size = "ExtraSmall"
"""

CONFIG = """
service_name = "Big"

[[roles]]
name = "Work"
instances = {count}
"""


def service_folder(root: Path) -> Path:
    folder = root / "big"
    (folder / "Work").mkdir(parents=True)
    (folder / "Work" / "role.py").write_text("")
    (folder / "service.toml").write_text(DEFINITION)
    return folder


async def test_a_service_folder_is_packed_against_the_configured_limit(tmp_path: Path) -> None:
    folder = service_folder(tmp_path)
    staged = tmp_path / "deployments" / "d1"
    staged.mkdir(parents=True)
    config = write_config(staged, 1, CONFIG.format(count=1500).encode(), "config.toml")
    pkg = await stage_package(str(folder), staged, 1, config, "config.toml", max_instances=2000)
    assert (pkg / "service.toml").is_file() and (pkg / "roles" / "Work").is_dir()


async def test_a_service_folder_over_the_configured_limit_is_refused(tmp_path: Path) -> None:
    folder = service_folder(tmp_path)
    staged = tmp_path / "deployments" / "d1"
    staged.mkdir(parents=True)
    config = write_config(staged, 1, CONFIG.format(count=12).encode(), "config.toml")
    with pytest.raises(ControllerError) as refused:
        await stage_package(str(folder), staged, 1, config, "config.toml", max_instances=10)
    assert refused.value.code == "BadRequest" and "max_instances" in refused.value.message
    assert not (staged / "pkg1").exists()
