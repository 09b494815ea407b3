"""Uploaded packages and configurations: written into the state folder and checked before use.

A package is checked completely (zip structure, manifest, hashes, definition, configuration
cross-checks) before any fabric command is sent, so a bad upload changes nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path

import msgspec

from fabric.controller import shared_folder
from fabric.frontend.api import ApiError
from fabric.model import ModelError, PackageError, Problem, read_package
from fabric.model.service import parse_configuration
from fabric.model.validate import MAX_INSTANCES, check_instance_limit

PACKAGES_DIR = "packages"
_MAX_PROBLEMS = 5


def _describe(problems: tuple[Problem, ...], renames: dict[str, str]) -> str:
    errors = [p for p in problems if p.severity == "error"] or list(problems)
    lines = []
    for p in errors[:_MAX_PROBLEMS]:
        text = str(p)
        for real, shown in renames.items():
            text = text.replace(real, shown)
        lines.append(text)
    more = len(errors) - _MAX_PROBLEMS
    return "; ".join(lines) + (f" (and {more} more)" if more > 0 else "")


def _check_configuration_name(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in (".cscfg", ".toml"):
        raise ApiError(
            400,
            "InvalidConfiguration",
            f"ConfigurationName {name!r} must end in .cscfg (XML) or .toml (the TOML form)",
        )
    return suffix


def _invalid_configuration(exc: ModelError, renames: dict[str, str]) -> ApiError:
    return ApiError(
        400, "InvalidConfiguration", "the configuration is not valid: " + _describe(exc.problems, renames)
    )


def check_configuration(
    configuration: bytes, configuration_name: str, package: Path | None, max_instances: int = MAX_INSTANCES
) -> None:
    """Check a configuration: against the definition in ``package`` when it is known, else alone
    (more than ``max_instances`` instances in all is refused either way).

    Raises:
        ApiError: 400 InvalidConfiguration, naming the first problems.
    """
    problems = configuration_problems(configuration, configuration_name, package, max_instances)
    if problems:
        raise _invalid_configuration(ModelError(problems), {})


def configuration_problems(
    configuration: bytes, configuration_name: str, package: Path | None, max_instances: int = MAX_INSTANCES
) -> tuple[Problem, ...]:
    """The problems that refuse a configuration, each as `fabric validate` words it with the
    file named ``configuration_name`` (none: the configuration may be applied).

    Raises:
        ApiError: 400 InvalidConfiguration when the name is neither .cscfg nor .toml.
    """
    suffix = _check_configuration_name(configuration_name)
    if package is not None and package.is_file():
        with tempfile.TemporaryDirectory(prefix="reddog-cfg-") as tmp:
            cfg = Path(tmp) / f"configuration{suffix}"
            cfg.write_bytes(configuration)
            try:
                read_package(package, cfg, max_instances=max_instances)
            except PackageError:
                pass  # the running package went bad on disk: leave the verdict to the controller
            except ModelError as exc:
                return tuple(
                    msgspec.structs.replace(p, file=configuration_name) if p.file == str(cfg) else p
                    for p in exc.problems
                )
        return ()
    parsed, report = parse_configuration(configuration, configuration_name)
    if parsed is not None:
        check_instance_limit(parsed, report, max_instances)
    if parsed is None or any(p.severity == "error" for p in report.problems):
        return tuple(report.problems)
    return ()


def stage_package(
    state_dir: Path,
    service: str,
    package: bytes,
    configuration: bytes | None,
    configuration_name: str,
    max_instances: int = MAX_INSTANCES,
) -> tuple[Path, bytes, str]:
    """Write an uploaded package under ``<state>/packages/<service>/`` and check it with its
    configuration (the uploaded one, or the one inside the package when None); more than
    ``max_instances`` instances in all is refused.

    Returns the staged package's path and the configuration bytes and name to deploy with.

    Raises:
        ApiError: 400 InvalidPackage (not a zip, corrupt, invalid definition) or
            InvalidConfiguration (the configuration does not fit the definition); nothing is
            left on disk then.
    """
    if configuration is not None:
        suffix = _check_configuration_name(configuration_name)
    if not package.startswith(b"PK"):
        raise ApiError(
            400, "InvalidPackage", "the package is not a .cspkg (a zip file); build one with `fabric package`"
        )
    if not shared_folder.acting():  # a controller replica whose term ended writes nothing here
        raise ApiError(503, "ServiceUnavailable", shared_folder.refusal("stage the package"))
    folder = state_dir / PACKAGES_DIR / service
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.cspkg"
    path.write_bytes(package)
    renames = {str(path): "package.cspkg"}
    try:
        with tempfile.TemporaryDirectory(prefix="reddog-cfg-") as tmp:
            cfg: Path | None = None
            if configuration is not None:
                cfg = Path(tmp) / f"configuration{suffix}"
                cfg.write_bytes(configuration)
                renames[str(cfg)] = configuration_name
            try:
                loaded = read_package(path, cfg, max_instances=max_instances)
            except PackageError as exc:
                raise ApiError(
                    400, "InvalidPackage", "the package is not valid: " + _describe(exc.problems, renames)
                ) from None
            except ModelError as exc:
                in_config = cfg is not None and any(str(cfg) in p.file for p in exc.errors)
                if in_config:
                    raise _invalid_configuration(exc, renames) from None
                raise ApiError(
                    400, "InvalidPackage", "the package is not valid: " + _describe(exc.problems, renames)
                ) from None
        if configuration is None:
            member = loaded.configuration_file.removeprefix(f"{path}:")
            with zipfile.ZipFile(path) as zf:
                configuration = zf.read(member)
            configuration_name = Path(member).name
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, configuration, configuration_name


def discard_package(path: str | None) -> None:
    """Remove one staged package (superseded by an upgrade, or its deployment deleted)."""
    if path and shared_folder.acting():
        Path(path).unlink(missing_ok=True)


def discard_packages(state_dir: Path, service: str) -> None:
    """Remove every staged package of a hosted service (it has been deleted)."""
    if shared_folder.acting():
        shutil.rmtree(state_dir / PACKAGES_DIR / service, ignore_errors=True)


def discard_unreferenced(state_dir: Path, service: str, keep: list[str]) -> None:
    """Remove a hosted service's staged packages but those in ``keep``: left by a command whose
    answer never came (kept then: the controller may still read it), or by a fabric stopped
    between staging and recording. Only when nothing may still read them (the caller knows)."""
    if not shared_folder.acting():
        return
    wanted = {Path(p).name for p in keep}  # by name (a uuid): the records may spell the folder otherwise
    try:
        staged = list((state_dir / PACKAGES_DIR / service).glob("*.cspkg"))
    except OSError:
        return
    for path in staged:
        if path.name not in wanted:
            path.unlink(missing_ok=True)


def discard_all_unreferenced(state_dir: Path, keep: dict[str, list[str]]) -> None:
    """At startup, before any request: :func:`discard_unreferenced` for every hosted service
    (``keep``: service -> the packages its records name); a deleted service's folder goes."""
    if not shared_folder.acting():
        return
    try:
        folders = [p for p in (state_dir / PACKAGES_DIR).iterdir() if p.is_dir()]
    except OSError:
        return
    for folder in folders:
        if folder.name in keep:
            discard_unreferenced(state_dir, folder.name, keep[folder.name])
        else:
            shutil.rmtree(folder, ignore_errors=True)
