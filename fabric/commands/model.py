"""`fabric validate` and `fabric package`: check a service model and pack it into a .cspkg."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

from fabric.model import ModelError, Problem, Service, build_package, load_service, vm_size
from fabric.model.definition import RoleDefinition

_PATH = click.Path(path_type=Path)


def _fail(problems: Iterable[Problem]) -> click.exceptions.Exit:
    for problem in problems:
        click.echo(str(problem), err=True)
    return click.exceptions.Exit(2)


def _endpoints(role: RoleDefinition) -> list[str]:
    out = []
    for e in role.input_endpoints:
        local = "" if e.local_port is None else f"->{e.local_port}"
        out.append(f"{e.name} {e.protocol} :{e.port}{local}")
    for i in role.internal_endpoints:
        ports = [str(i.port)] if i.port else []
        ports += [str(p) for p in i.fixed_ports] + [f"{r.min}-{r.max}" for r in i.fixed_port_ranges]
        out.append(f"{i.name} internal {i.protocol} :{','.join(ports) or '*'}")
    for n in role.instance_input_endpoints:
        r = n.allocate_public_port_from
        out.append(f"{n.name} per-instance {n.protocol} :{r.min}-{r.max}->{n.local_port}")
    return out


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def summary(service: Service) -> list[str]:
    """The one-screen description `fabric validate` prints for a valid service."""
    d = service.definition
    instances = sum(service.instances(r.name) for r in d.roles)
    endpoints = sum(r.endpoint_count for r in d.roles)
    tasks = sum(len(r.startup) for r in d.roles)
    lines = [
        f"{d.name}: {_n(len(d.roles), 'role')}, {_n(instances, 'instance')}, "
        f"{_n(endpoints, 'endpoint')}, {_n(tasks, 'startup task')}",
        f"  definition:    {service.definition_file}",
        f"  configuration: {service.configuration_file}",
    ]
    width = max(len(r.name) for r in d.roles)
    for role in d.roles:
        size = vm_size(role.vm_size)
        kind = "worker" if role.kind == "worker" else "web (HWC)" if role.is_hwc else "web"
        if role.sites:
            kind += f", {_n(len(role.sites), 'site')}"
        lines.append(
            f"  {role.name:<{width}}  {kind:<15} {role.vm_size} ({_n(size.cores, 'core')}, "
            f"{size.memory_mb} MB) x{service.instances(role.name)}"
        )
        lines.append(f"    endpoints: {', '.join(_endpoints(role)) or 'none'}")
        tasks_text = ", ".join(t.task_type for t in role.startup) or "none"
        plugins = ", ".join(role.plugins) or "none"
        lines.append(f"    startup tasks: {tasks_text}; plugins: {plugins}")
    return lines


@click.command()
@click.argument("path", type=_PATH)
@click.argument("config", type=_PATH, required=False)
@click.option("--strict", is_flag=True, help="Treat warnings (kept but unused elements) as errors.")
def validate(path: Path, config: Path | None, strict: bool) -> None:
    """Check a service folder, .csdef, service .toml or .cspkg (and CONFIG, if given).

    Exits 0 with a summary, or 2 with every problem as file:line: message.
    """
    try:
        service = load_service(path, config, strict=strict)
    except ModelError as exc:
        raise _fail(exc.problems) from None
    for warning in service.warnings:
        click.echo(str(warning), err=True)
    for line in summary(service):
        click.echo(line)


@click.command()
@click.argument("service_dir", type=_PATH)
@click.option("-o", "--output", "output", type=_PATH, required=True, help="The .cspkg to write.")
@click.option(
    "--config", type=_PATH, help="The configuration to pack (default: Local, Cloud, or the only one)."
)
def package(service_dir: Path, output: Path, config: Path | None) -> None:
    """Validate SERVICE_DIR and pack its definition, configuration and role code into a .cspkg."""
    try:
        manifest = build_package(service_dir, output, config)
    except ModelError as exc:
        raise _fail(exc.problems) from None
    size = sum(f.size for f in manifest.files)
    click.echo(
        f"wrote {output}: service {manifest.service}, {len(manifest.files)} files, {size} bytes, "
        f"configuration {manifest.configuration}"
    )
