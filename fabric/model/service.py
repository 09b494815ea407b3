"""Load a whole service: find its definition and configuration, check them and its code folders."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import msgspec

from fabric.model._files import read_model_bytes
from fabric.model._limits import MAX_INSTANCES
from fabric.model._manifest import CSDEF, MANIFEST, SERVICE_TOML, read_manifest
from fabric.model._source import Report, SourceMap, raise_if_errors
from fabric.model.configuration import ServiceConfiguration
from fabric.model.definition import RoleDefinition, ServiceDefinition
from fabric.model.errors import ModelError, Problem
from fabric.model.toml import parse_configuration_toml, parse_definition_toml
from fabric.model.validate import check_configuration, check_definition
from fabric.model.xml import parse_configuration_xml, parse_definition_xml

_PREFERRED = ("local", "cloud")


class Service(msgspec.Struct, frozen=True, kw_only=True):
    """A definition, the configuration chosen for it, and where each role's code lives."""

    definition: ServiceDefinition
    configuration: ServiceConfiguration
    root: str
    definition_file: str
    configuration_file: str
    role_dirs: dict[str, str]
    content_dirs: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()
    packaged: bool = False

    def role_dir(self, role: str) -> Path:
        """The folder holding a role's code (its approot); inside the zip when `packaged`."""
        return Path(self.role_dirs[role])

    def content_dir(self, role: str, declared: str) -> Path:
        """The folder a path written in the definition (a site's physicalDirectory...) names."""
        return Path(self.content_dirs[role][declared])

    def instances(self, role: str) -> int:
        """How many instances the configuration asks for."""
        return self.configuration.role(role).instances


def declared_dirs(role: RoleDefinition) -> list[str]:
    """Folders a role's definition names besides its own: sites, applications, contents."""
    found: list[str] = []
    for site in role.sites:
        if site.physical_directory:
            found.append(site.physical_directory)
        for app in site.virtual_applications:
            found.append(app.physical_directory)
            found.extend(v.physical_directory for v in app.virtual_directories)
        found.extend(v.physical_directory for v in site.virtual_directories)
    found.extend(c.source_directory for c in role.contents)
    return list(dict.fromkeys(found))


class Layout:
    """Where role folders are and whether paths exist: a source folder or an extracted package."""

    in_memory = False  # True for a .cspkg read without extracting it

    def __init__(self, root: Path, manifest_dirs: dict[str, dict[str, str]] | None = None) -> None:
        self.root = root
        self.packaged = manifest_dirs is not None
        self.manifest_dirs = manifest_dirs or {}

    def role_dir(self, role: str) -> str:
        """Where a role's code is."""
        return str(self.root / "roles" / role if self.packaged else self.root / role)

    def content_dir(self, role: str, declared: str) -> str:
        """Where a folder named in the definition is."""
        if self.packaged:
            inner = self.manifest_dirs.get(role, {}).get(declared)
            return str(self.root / inner) if inner else self.role_dir(role)
        path = declared.replace("\\", "/")
        if re.match(r"[A-Za-z]:/", path) or path.startswith("/"):
            return str(Path(path))
        return str((self.root / path).resolve())

    def is_dir(self, path: str) -> bool:
        """Whether `path` is an existing folder."""
        return Path(path).is_dir()

    def is_file(self, path: str) -> bool:
        """Whether `path` is an existing file."""
        return Path(path).is_file()


def parse_definition(data: bytes, file: str) -> tuple[ServiceDefinition | None, Report]:
    """Parse definition bytes in the form the file name says (.csdef XML or .toml)."""
    if file.lower().endswith(".toml"):
        return parse_definition_toml(data, file)
    return parse_definition_xml(data, file)


def parse_configuration(data: bytes, file: str) -> tuple[ServiceConfiguration | None, Report]:
    """Parse configuration bytes in the form the file name says (.cscfg XML or .toml)."""
    if file.lower().endswith(".toml"):
        return parse_configuration_toml(data, file)
    return parse_configuration_xml(data, file)


def _guarded(
    parse: Callable[[bytes, str], tuple[object, Report]], data: bytes, file: str
) -> tuple[object, Report]:
    try:
        return parse(data, file)
    except ModelError as exc:
        report = Report(SourceMap(file))
        report.problems.extend(exc.problems)
        return None, report


def assemble(
    definition: tuple[bytes, str],
    configuration: tuple[bytes, str],
    layout: Layout,
    *,
    strict: bool = False,
    require_code: bool = False,
    root: str = "",
    max_instances: int = MAX_INSTANCES,
) -> Service:
    """Parse, cross-check and bundle a definition and configuration; raises ModelError.

    Errors in both files are reported together; warnings are promoted to errors when strict.
    More than ``max_instances`` instances (all roles together) is an error.
    """
    d, d_report = _guarded(parse_definition, *definition)
    c, c_report = _guarded(parse_configuration, *configuration)
    assert d is None or isinstance(d, ServiceDefinition)
    assert c is None or isinstance(c, ServiceConfiguration)
    if d is not None:
        check_definition(d, d_report)
        _check_code(d, layout, d_report, require_code or layout.in_memory)
        if c is not None:
            check_configuration(c, d, c_report, max_instances=max_instances)
    problems = _sorted(d_report.problems) + _sorted(c_report.problems)
    raise_if_errors(problems, strict=strict)
    assert d is not None and c is not None
    return Service(
        definition=d,
        configuration=c,
        root=root or str(layout.root),
        definition_file=definition[1],
        configuration_file=configuration[1],
        role_dirs={r.name: layout.role_dir(r.name) for r in d.roles},
        content_dirs={r.name: {p: layout.content_dir(r.name, p) for p in declared_dirs(r)} for r in d.roles},
        warnings=tuple(problems),
        packaged=layout.in_memory,
    )


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: p.line or 0)


def _check_code(d: ServiceDefinition, layout: Layout, report: Report, required: bool) -> None:
    def say(loc: tuple[str | int, ...], message: str) -> None:
        report.add(loc, message, "error" if required else "warning")

    for i, role in enumerate(d.roles):
        role_dir = layout.role_dir(role.name)
        if not layout.is_dir(role_dir):
            say(("roles", i, "name"), f"role {role.name} has no code folder {role_dir}; create it")
            continue
        entry = role.runtime.entry_point if role.runtime else None
        if entry is not None and entry.netfx is not None:
            module = entry.netfx.module_file
            bases = (PurePosixPath(role_dir), PurePosixPath(role_dir) / "bin")
            if not any(layout.is_file(str(base / module)) for base in bases):
                say(
                    ("roles", i, "runtime", "entry_point", "netfx", "assembly_name"),
                    f"{module} is not in {role_dir}; add the role's entry module there",
                )
        for declared in declared_dirs(role):
            where = layout.content_dir(role.name, declared)
            if not layout.is_dir(where):
                say(
                    ("roles", i, "name"),
                    f"folder '{declared}' named by role {role.name} does not exist ({where})",
                )


def _environment(path: Path, prefix: str, suffix: str) -> str:
    """`ServiceConfiguration.Local.cscfg` -> `local`; a name without the prefix keeps its stem."""
    name = path.name.lower()
    name = name.removesuffix(suffix.lower())
    name = name.removeprefix(prefix.lower())
    return name.strip(".")


def find_configuration(root: Path, toml: bool) -> Path:
    """Pick the configuration in a service folder: Local, then Cloud, then the only one.

    XML services use `ServiceConfiguration.<Env>.cscfg`; TOML services `config.<env>.toml` or
    `config.toml`. Raises ModelError when there is none or the choice is ambiguous.
    """
    if toml:
        found = sorted(
            p for p in root.glob("config*.toml") if re.fullmatch(r"config(\..+)?\.toml", p.name, re.I)
        )
        prefix, suffix, example = "config", ".toml", "config.local.toml"
    else:
        found = sorted(root.glob("*.cscfg"))
        prefix, suffix, example = "ServiceConfiguration", ".cscfg", "ServiceConfiguration.Local.cscfg"
    if not found:
        raise ModelError.single(
            str(root), f"has no configuration; add {example} or pass a configuration file"
        )
    if len(found) == 1:
        return found[0]
    envs = {_environment(p, prefix, suffix): p for p in found}
    for env in _PREFERRED:
        if env in envs:
            return envs[env]
    names = ", ".join(p.name for p in found)
    raise ModelError.single(
        str(root), f"has several configurations ({names}) and none is Local or Cloud; pass one"
    )


def _definition_in(root: Path) -> Path:
    xml, toml = root / CSDEF, root / SERVICE_TOML
    if xml.is_file() and toml.is_file():
        raise ModelError.single(
            str(root), f"has both {CSDEF} and {SERVICE_TOML}; keep one or pass the file to use"
        )
    if xml.is_file() or toml.is_file():
        return xml if xml.is_file() else toml
    raise ModelError.single(str(root), f"has no {CSDEF} or {SERVICE_TOML}; is this a service folder?")


def load_service(
    path: str | Path,
    config: str | Path | None = None,
    *,
    strict: bool = False,
    require_code: bool = False,
    max_instances: int = MAX_INSTANCES,
) -> Service:
    """Load and validate a service from a folder, a .csdef, a service .toml or a .cspkg.

    `config` overrides the configuration that would be chosen (Local, then Cloud, then the
    only one). A missing role code folder is a warning unless `require_code`. With `strict`
    warnings (kept-but-unused elements) are errors. More than `max_instances` instances in
    all is an error. Raises ModelError listing every problem.
    """
    p = Path(path)
    if p.suffix.lower() == ".cspkg" and not p.is_dir():
        from fabric.model.package import read_package  # package builds on this module

        return read_package(p, config, strict=strict, max_instances=max_instances)
    manifest_dirs = None
    if p.is_dir():
        root = p
        if (p / MANIFEST).is_file():
            manifest = read_manifest((p / MANIFEST).read_bytes(), str(p / MANIFEST))
            manifest_dirs = manifest.directories
            definition = p / manifest.definition
            config = config if config is not None else p / manifest.configuration
        else:
            definition = _definition_in(p)
    elif p.suffix.lower() in (".csdef", ".toml"):
        root, definition = p.parent, p
    elif not p.exists():
        raise ModelError.single(str(p), "does not exist; pass a service folder, .csdef, .toml or .cspkg")
    else:
        raise ModelError.single(str(p), "is not a service; pass a service folder, .csdef, .toml or .cspkg")
    cfg = (
        Path(config) if config is not None else find_configuration(root, definition.suffix.lower() == ".toml")
    )
    if cfg.suffix.lower() not in (".cscfg", ".toml"):
        raise ModelError.single(str(cfg), "is not a configuration; pass a .cscfg or .toml file")
    return assemble(
        (read_model_bytes(definition), str(definition)),
        (read_model_bytes(cfg), str(cfg)),
        Layout(root.resolve(), manifest_dirs),
        strict=strict,
        require_code=require_code,
        max_instances=max_instances,
    )


def read_definition(path: str | Path) -> ServiceDefinition:
    """Read and check a .csdef or service.toml on its own; raises ModelError with every problem."""
    p = Path(path)
    d, report = parse_definition(read_model_bytes(p), str(p))
    if d is not None:
        check_definition(d, report)
    raise_if_errors(_sorted(report.problems))
    assert d is not None
    return d


def read_configuration(path: str | Path) -> ServiceConfiguration:
    """Read a .cscfg or configuration TOML (no cross-checks); raises ModelError."""
    p = Path(path)
    c, report = parse_configuration(read_model_bytes(p), str(p))
    raise_if_errors(_sorted(report.problems))
    assert c is not None
    return c
