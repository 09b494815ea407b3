"""Packages and configurations on the controller's disk: staged, checked, loaded, cleaned.

A deployment folder (``<state>/deployments/<id>/``) holds ``pkg<n>/`` (an extracted package)
and ``config<n>.cscfg`` (or ``.toml``) for each generation n. The controller's copy is the goal
state: the package a user uploaded may be gone by the time the fabric restarts.
"""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread

from fabric.controller import shared_folder
from fabric.controller.goal_store import GoalStore
from fabric.controller.messages import ControllerError
from fabric.controller.model import Deployment, Generation
from fabric.controller.store import GenerationRecord
from fabric.model.definition import MAX_INT
from fabric.model.errors import ModelError
from fabric.model.package import build_package, extract_package, read_package
from fabric.model.service import Service, load_service

#: A user error lists at most this many problems (the CLI's `fabric validate` shows them all).
MAX_PROBLEMS = 3
#: No instance limit: for generations the fabric accepted before (recovered from the store).
NO_LIMIT = MAX_INT


def model_error(
    what: str, exc: ModelError, config: Path | None = None, config_name: str = ""
) -> ControllerError:
    """A BadRequest naming the first problems of a package or configuration (the controller's
    copy of the configuration is named as the user named it)."""
    problems = [str(p) for p in (exc.errors or exc.problems)]
    if config is not None and config_name:
        problems = [p.replace(str(config), config_name) for p in problems]
    text = "; ".join(problems[:MAX_PROBLEMS])
    if len(problems) > MAX_PROBLEMS:
        text += f"; and {len(problems) - MAX_PROBLEMS} more (run `fabric validate`)"
    return ControllerError("BadRequest", f"{what}: {text}")


def config_path(folder: Path, number: int, configuration_name: str) -> Path:
    """Where generation ``number``'s configuration lives (its suffix says XML or TOML)."""
    suffix = ".toml" if configuration_name.lower().endswith(".toml") else ".cscfg"
    return folder / f"config{number}{suffix}"


def write_config(folder: Path, number: int, configuration: bytes, configuration_name: str) -> Path:
    """Write a generation's configuration file; returns its path."""
    path = config_path(folder, number, configuration_name)
    shared_folder.check("write the configuration")
    path.write_bytes(configuration)
    return path


def _stage(
    package_path: str, folder: Path, number: int, config: Path, config_name: str, max_instances: int
) -> Path:
    source = Path(package_path)
    dest = folder / f"pkg{number}"
    shared_folder.check("extract the package")
    if not source.exists():
        raise ControllerError("BadRequest", f"package {package_path} does not exist; upload the .cspkg again")
    try:
        if source.is_dir():
            # A service folder (`fabric run DIR`): packed first, so the goal state is a package.
            packed = folder / f"pkg{number}.cspkg"
            build_package(source, packed, config, max_instances=max_instances)
            extract_package(packed, dest, max_instances=NO_LIMIT)  # checked as it was packed
            packed.unlink()
        else:
            # The package with this configuration, checked whole (instance counts included).
            read_package(source, config, max_instances=max_instances)
            extract_package(source, dest, max_instances=NO_LIMIT)  # its own configuration is not used
    except ModelError as exc:
        shared_folder.remove(dest)
        raise model_error(f"package {source.name}", exc, config, config_name) from None
    except OSError as exc:
        shared_folder.remove(dest)
        raise ControllerError("BadRequest", f"package {source.name} cannot be read: {exc}") from None
    return dest


async def stage_package(
    package_path: str,
    folder: Path,
    number: int,
    config: Path,
    config_name: str = "",
    max_instances: int = NO_LIMIT,
) -> Path:
    """Check a package (a .cspkg or a service folder) with a configuration and extract it into
    ``folder/pkg<number>``; returns that folder. More than ``max_instances`` instances in all
    is refused.

    Raises:
        ControllerError: BadRequest when the package is missing, corrupt or does not match.
    """
    return await anyio.to_thread.run_sync(
        _stage, package_path, folder, number, config, config_name, max_instances
    )


def _load(record: GenerationRecord, folder: Path, max_instances: int) -> Generation:
    config = config_path(folder, record.number, record.configuration_name)
    if not config.is_file():
        shared_folder.check("write the configuration")
        folder.mkdir(parents=True, exist_ok=True)
        config.write_bytes(record.configuration)
    services: dict[str, Service] = {}
    loaded: dict[str, Service] = {}
    for package in dict.fromkeys([record.main, *record.packages.values()]):
        try:
            loaded[package] = load_service(package, config, max_instances=max_instances)
        except ModelError as exc:
            raise model_error(
                f"configuration {record.configuration_name}", exc, config, record.configuration_name
            ) from None
    main = loaded[record.main]
    for role in main.definition.roles:
        services[role.name] = loaded[record.packages.get(role.name, record.main)]
    return Generation(record=record, services=services, main=main)


async def load_generation(
    record: GenerationRecord, folder: Path, max_instances: int = NO_LIMIT
) -> Generation:
    """Load a generation's services from its packages and configuration (rewritten from the
    record when the file is missing); more than ``max_instances`` instances in all is refused.

    Raises:
        ControllerError: BadRequest when the configuration does not fit a package.
    """
    return await anyio.to_thread.run_sync(_load, record, folder, max_instances)


async def drop_unused(store: GoalStore, dep: Deployment) -> tuple[Path, set[str]]:
    """Forget generations no instance runs and that are not current. Returns the deployment
    folder and the package folders still used: ``remove_unused_packages`` deletes the others,
    off the event loop (an extracted package may be thousands of files)."""
    used = {dep.generation} | {i.generation for i in dep.instances.values()}
    for number in [n for n in dep.generations if n not in used]:
        gen = dep.generations.pop(number)
        await store.delete_generation(dep.id, number)
        shared_folder.remove(config_path(dep.folder, number, gen.record.configuration_name))
    kept = {p for g in dep.generations.values() for p in [g.record.main, *g.record.packages.values()]}
    return dep.folder, kept


async def remove_unused_packages(folder: Path, kept: set[str]) -> None:
    """Delete the package folders (``pkg*``) of ``folder`` not in ``kept``, in a worker thread."""

    def remove() -> None:
        for child in folder.glob("pkg*"):
            if child.is_dir() and str(child) not in kept:
                shared_folder.remove(child)

    await anyio.to_thread.run_sync(remove)


async def write_config_off_loop(
    folder: Path, number: int, configuration: bytes, configuration_name: str
) -> Path:
    """``write_config`` in a worker thread (a configuration may be megabytes)."""
    return await anyio.to_thread.run_sync(write_config, folder, number, configuration, configuration_name)
