"""Every rule Azure applied to a definition and its configuration, with fixes a person can act on."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from fabric.model._convert import suggest
from fabric.model._limits import MAX_INSTANCES as MAX_INSTANCES
from fabric.model._limits import check_definition_limits
from fabric.model._limits import check_instance_limit as check_instance_limit
from fabric.model._ports import check_local_ports, check_public_ports
from fabric.model._source import Loc, Report
from fabric.model.configuration import ServiceConfiguration
from fabric.model.definition import (
    PLUGIN_SETTINGS,
    RoleDefinition,
    ServiceDefinition,
    TaskVariable,
)
from fabric.model.environment import parse_role_instance_xpath
from fabric.model.errors import UnsupportedXPathError

MAX_ROLES = 25
MAX_ENDPOINTS = 25
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # role names become folder names
_HEX = re.compile(r"[0-9A-Fa-f]+")


def _duplicates(report: Report, base: Loc, names: Iterable[str], what: str, *, fold: bool = False) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        key = name.lower() if fold else name
        if key in seen:
            report.error((*base, i, "name"), f"{what} '{name}' is defined twice; names must be unique")
        seen.add(key)


def _relative(path: str) -> bool:
    p = PurePosixPath(path.replace("\\", "/"))
    return not p.is_absolute() and not re.match(r"[A-Za-z]:", path) and ".." not in p.parts


def check_definition(d: ServiceDefinition, report: Report) -> None:
    """Report every rule the definition breaks on its own (no configuration needed)."""
    if not _SAFE_NAME.fullmatch(d.name):
        report.error(
            ("name",), f"'{d.name}' is not a valid service name; use letters, digits, '.', '_' or '-'"
        )
    if not d.roles:
        report.error((), "defines no roles; add a WebRole or WorkerRole")
    if len(d.roles) > MAX_ROLES:
        report.error(
            ("roles", MAX_ROLES), f"defines {len(d.roles)} roles; a service may have at most {MAX_ROLES}"
        )
    _duplicates(report, ("roles",), (r.name for r in d.roles), "role", fold=True)
    total = sum(r.endpoint_count for r in d.roles)
    if total > MAX_ENDPOINTS:
        report.error(
            (), f"defines {total} endpoints; a service may have at most {MAX_ENDPOINTS} in all roles together"
        )
    _duplicates(
        report, ("load_balancer_probes",), (p.name for p in d.load_balancer_probes), "load balancer probe"
    )
    for i, probe in enumerate(d.load_balancer_probes):
        loc: Loc = ("load_balancer_probes", i)
        if probe.protocol in ("http", "https") and not probe.path:
            report.error(
                (*loc, "path"), f'an {probe.protocol} probe needs a path; add path="/health" or similar'
            )
        if probe.protocol == "tcp" and probe.path is not None:
            report.error((*loc, "path"), "a tcp probe takes no path; remove it")
    forwarders = [i for i, r in enumerate(d.roles) if "RemoteForwarder" in r.plugins]
    for i in forwarders[1:]:
        report.error(
            ("roles", i, "imports"), "RemoteForwarder may be imported by one role only; remove it here"
        )
    check_public_ports(d, report)
    check_definition_limits(d, report)
    for i, role in enumerate(d.roles):
        _check_role(d, role, ("roles", i), report)
    _report_kept(d.kept, report)


def _report_kept(kept: Iterable[object], report: Report) -> None:
    first: dict[tuple[str, str], int] = {}
    count: dict[tuple[str, str], int] = {}
    for k, item in enumerate(kept):
        key = (getattr(item, "where", "").rsplit("/", 1)[-1].split("[")[0], getattr(item, "name", ""))
        first.setdefault(key, k)
        count[key] = count.get(key, 0) + 1
    for key, k in first.items():
        more = f" ({count[key]} places)" if count[key] > 1 else ""
        report.warn(("kept", k), f"{key[1]} is kept but not acted on here{more}")


def _check_role(d: ServiceDefinition, role: RoleDefinition, loc: Loc, report: Report) -> None:
    if not _SAFE_NAME.fullmatch(role.name):
        report.error(
            (*loc, "name"),
            f"'{role.name}' is not a valid role name; use up to 63 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit",
        )
    if role.kind == "worker" and role.sites:
        report.error((*loc, "sites"), "only web roles have sites; remove them or make the role a web role")
    _duplicates(report, (*loc, "settings"), (s.name for s in role.settings), "setting")
    _duplicates(report, (*loc, "local_storage"), (s.name for s in role.local_storage), "LocalStorage")
    _duplicates(report, (*loc, "certificates"), (c.name for c in role.certificates), "certificate")
    _duplicates(report, (*loc, "sites"), (s.name for s in role.sites), "site")
    seen_imports: set[str] = set()
    for j, imp in enumerate(role.imports):
        if imp.module_name in seen_imports:
            report.error(
                (*loc, "imports", j, "module_name"), f"plugin {imp.module_name} is imported twice; remove one"
            )
        seen_imports.add(imp.module_name)
    for j, s in enumerate(role.settings):
        for plugin, names in PLUGIN_SETTINGS.items():
            if s.name in names and plugin in role.plugins:
                report.error(
                    (*loc, "settings", j, "name"),
                    f"'{s.name}' is declared by the {plugin} plugin; remove this declaration",
                )
    names = role.endpoint_names
    seen_endpoints: set[str] = set()
    for group in ("input_endpoints", "internal_endpoints", "instance_input_endpoints"):
        for j, e in enumerate(getattr(role, group)):
            if e.name in seen_endpoints:
                report.error(
                    (*loc, group, j, "name"),
                    f"endpoint '{e.name}' is defined twice in role {role.name}; names must be unique",
                )
            seen_endpoints.add(e.name)
    certs = [c.name for c in role.certificates]
    probes = [p.name for p in d.load_balancer_probes]
    for j, e in enumerate(role.input_endpoints):
        eloc: Loc = (*loc, "input_endpoints", j)
        if e.protocol == "https" and not e.certificate:
            report.error(
                (*eloc, "certificate"),
                "an https endpoint needs a certificate; name one of the role's certificates",
            )
        elif e.certificate and e.protocol != "https":
            report.error(
                (*eloc, "certificate"),
                "a certificate is only used by https endpoints; remove it or use protocol https",
            )
        elif e.certificate and e.certificate not in certs:
            report.error(
                (*eloc, "certificate"),
                f"certificate '{e.certificate}' is not defined in role {role.name}"
                f"{suggest(e.certificate, certs)}; add it to Certificates",
            )
        if e.load_balancer_probe and e.load_balancer_probe not in probes:
            report.error(
                (*eloc, "load_balancer_probe"),
                f"load balancer probe '{e.load_balancer_probe}' is not defined"
                f"{suggest(e.load_balancer_probe, probes)}; add it to LoadBalancerProbes",
            )
    for j, e in enumerate(role.internal_endpoints):
        eloc = (*loc, "internal_endpoints", j)
        if e.port is not None and (e.fixed_ports or e.fixed_port_ranges):
            report.error(
                (*eloc, "port"),
                "give the port once: a port attribute, FixedPort or FixedPortRange, not several",
            )
        for k, r in enumerate(e.fixed_port_ranges):
            if r.min > r.max:
                report.error(
                    (*eloc, "fixed_port_ranges", k), f"range {r.min}-{r.max} is empty; make min <= max"
                )
    if role.is_hwc and len(role.internal_endpoints) > 1:
        report.error(
            (*loc, "internal_endpoints", 1),
            "a web role without Sites may have one internal endpoint only; remove the others or add Sites",
        )
    check_local_ports(role, loc, report)
    _check_sites(role, loc, report)
    if role.runtime is not None:
        _check_environment(role, role.runtime.environment, (*loc, "runtime", "environment"), report)
        entry = role.runtime.entry_point
        eloc = (*loc, "runtime", "entry_point")
        if entry is not None and (entry.netfx is None) == (entry.program is None):
            report.error(eloc, "give exactly one entry point: NetFxEntryPoint or ProgramEntryPoint")
        elif entry is not None and entry.program is not None and role.kind == "web":
            report.error(
                (*eloc, "program"), "ProgramEntryPoint is for worker roles; use NetFxEntryPoint in a web role"
            )
        elif entry is not None and entry.netfx is not None and not _relative(entry.netfx.assembly_name):
            report.error(
                (*eloc, "netfx", "assembly_name"),
                "must be a path inside the role folder; remove the leading '/' or '..'",
            )
        elif entry is not None and entry.program is not None and not entry.program.command_line.strip():
            report.error((*eloc, "program", "command_line"), "is empty; give the program to run")
    for j, task in enumerate(role.startup):
        if not task.command_line.strip():
            report.error((*loc, "startup", j, "command_line"), "is empty; give the command to run")
        _check_environment(role, task.environment, (*loc, "startup", j, "environment"), report)
    for j, content in enumerate(role.contents):
        if not _relative(content.destination):
            report.error(
                (*loc, "contents", j, "destination"),
                "must be a folder inside approot; remove the leading '/' or '..'",
            )


def _check_sites(role: RoleDefinition, loc: Loc, report: Report) -> None:
    web = {e.name: e.protocol for e in role.input_endpoints} | {
        e.name: e.protocol for e in role.internal_endpoints
    }
    bound: dict[tuple[str, str], str] = {}
    for j, site in enumerate(role.sites):
        sloc: Loc = (*loc, "sites", j)
        if not site.bindings:
            report.error((*sloc, "bindings"), "a site needs at least one binding; add Bindings/Binding")
        _duplicates(report, (*sloc, "bindings"), (b.name for b in site.bindings), "binding")
        for k, b in enumerate(site.bindings):
            bloc: Loc = (*sloc, "bindings", k, "endpoint_name")
            if b.endpoint_name not in web:
                report.error(
                    bloc,
                    f"endpoint '{b.endpoint_name}' is not defined in role {role.name}"
                    f"{suggest(b.endpoint_name, list(web))}",
                )
                continue
            if web[b.endpoint_name] not in ("http", "https"):
                report.error(
                    bloc,
                    f"endpoint '{b.endpoint_name}' is {web[b.endpoint_name]}; "
                    "a site binds to http or https endpoints",
                )
            key = (b.endpoint_name, (b.host_header or "").lower())
            if key in bound:
                report.error(
                    bloc,
                    f"site {bound[key]} already binds endpoint '{b.endpoint_name}' with the same "
                    "host header; set a distinct hostHeader",
                )
            bound[key] = site.name
        _duplicates(
            report,
            (*sloc, "virtual_applications"),
            (a.name for a in site.virtual_applications),
            "virtual application",
        )
        _duplicates(
            report,
            (*sloc, "virtual_directories"),
            (v.name for v in site.virtual_directories),
            "virtual directory",
        )


def _check_environment(role: RoleDefinition, env: tuple[TaskVariable, ...], loc: Loc, report: Report) -> None:
    _duplicates(report, loc, (v.name for v in env), "variable")
    resources = [s.name for s in role.local_storage]
    settings = list(role.declared_settings)
    endpoints = list(role.endpoint_names)
    for j, var in enumerate(env):
        vloc: Loc = (*loc, j)
        if (var.value is None) == (var.xpath is None):
            report.error(vloc, "give either a value or a RoleInstanceValue xpath, exactly one")
            continue
        if var.xpath is None:
            continue
        try:
            ref = parse_role_instance_xpath(var.xpath)
        except UnsupportedXPathError as exc:
            report.error((*vloc, "xpath"), exc.problems[0].message)
            continue
        declared = {"setting": settings, "resource": resources, "endpoint": endpoints}.get(ref.kind)
        if declared is not None and ref.name not in declared:
            what = {"setting": "setting", "resource": "LocalStorage", "endpoint": "endpoint"}[ref.kind]
            report.error(
                (*vloc, "xpath"),
                f"names {what} '{ref.name}', which role {role.name} does not declare"
                f"{suggest(ref.name or '', declared)}",
            )


def check_configuration(
    c: ServiceConfiguration, d: ServiceDefinition, report: Report, *, max_instances: int = MAX_INSTANCES
) -> None:
    """Report every way the configuration disagrees with the definition, and instance counts
    over ``max_instances`` (per deployment, all roles together)."""
    check_instance_limit(c, report, max_instances)
    if c.service_name != d.name:
        report.error(
            ("service_name",),
            f"is '{c.service_name}' but the definition names the service '{d.name}'; make them match",
        )
    _duplicates(report, ("roles",), (r.name for r in c.roles), "role", fold=True)
    defined = {r.name: r for r in d.roles}
    configured = {r.name for r in c.roles}
    for defined_role in d.roles:
        if defined_role.name not in configured:
            report.error(
                (), f"has no configuration for role '{defined_role.name}'; add it with an instance count"
            )
    for i, rc in enumerate(c.roles):
        loc: Loc = ("roles", i)
        role = defined.get(rc.name)
        if role is None:
            report.error(
                (*loc, "name"),
                f"role '{rc.name}' is not in the definition{suggest(rc.name, list(defined))}; "
                "remove it or fix the name",
            )
            continue
        _duplicates(report, (*loc, "settings"), (s.name for s in rc.settings), "setting")
        _duplicates(report, (*loc, "certificates"), (s.name for s in rc.certificates), "certificate")
        declared = list(role.declared_settings)
        given = {s.name for s in rc.settings}
        for j, s in enumerate(rc.settings):
            if s.name not in declared:
                report.error(
                    (*loc, "settings", j, "name"),
                    f"setting '{s.name}' is not declared by role {rc.name}"
                    f"{suggest(s.name, declared)}; declare it in the definition or remove it",
                )
        for decl in role.settings:
            if decl.name not in given:
                report.error(loc, f"setting '{decl.name}' declared by role {rc.name} has no value; add it")
        certs = list(role.declared_certificates)
        given_certs = {t.name for t in rc.certificates}
        for j, t in enumerate(rc.certificates):
            if t.name not in certs:
                report.error(
                    (*loc, "certificates", j, "name"),
                    f"certificate '{t.name}' is not declared by role {rc.name}"
                    f"{suggest(t.name, certs)}; declare it or remove it",
                )
            if not _HEX.fullmatch(t.thumbprint):
                report.error(
                    (*loc, "certificates", j, "thumbprint"), "must be hexadecimal digits without spaces"
                )
        for cert in role.certificates:
            if cert.name not in given_certs:
                report.error(
                    loc, f"certificate '{cert.name}' declared by role {rc.name} has no thumbprint; add it"
                )
        for e in role.instance_input_endpoints:
            r = e.allocate_public_port_from
            if r.max - r.min + 1 < rc.instances <= max_instances:  # (over the limit: said once)
                report.error(
                    (*loc, "instances"),
                    f"{rc.instances} instances need {rc.instances} public ports, but endpoint "
                    f"{e.name} allocates from {r.min}-{r.max}; widen the range",
                )
    _report_kept(c.kept, report)
