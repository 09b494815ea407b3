"""The portal's configuration form: a deployment's settings and instance counts as fields, and
a check that words each problem exactly as `fabric validate` does, beside the field it concerns.

    GET  /portal/configuration?service=S&slot=P          -> ConfigurationForm
    POST /portal/configuration/check?service=S&slot=P    body FormValues -> CheckedConfiguration

The check changes nothing: the page then sends the configuration it returns to the API
(``POST .../deploymentslots/{slot}?comp=config``), as `fabric config` does.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import TYPE_CHECKING, Final
from xml.etree import ElementTree

import anyio
import defusedxml.ElementTree as SafeXml  # type: ignore[import-untyped]
import msgspec

from fabric.controller.configuration_view import ConfigurationView, GetConfiguration
from fabric.controller.messages import GetDeployment, Slot
from fabric.frontend._http import Request, Response
from fabric.frontend.api import ApiError, bad_request
from fabric.frontend.chaos_routes import _pool as pool_of
from fabric.frontend.ffe import Forward
from fabric.frontend.staging import configuration_problems

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe

NS: Final = "http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration"
#: a form is a few settings per role: far below this
FORM_MAX_BYTES: Final = 1024 * 1024


class SettingField(msgspec.Struct, frozen=True):
    """One setting of a role."""

    name: str
    value: str


class RoleFields(msgspec.Struct, frozen=True):
    """One role's fields."""

    name: str
    instances: str
    settings: list[SettingField]


class ConfigurationForm(msgspec.Struct, frozen=True):
    """What the form shows."""

    name: str
    generation: int
    roles: list[RoleFields]


class RoleValues(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the form sends for one role."""

    instances: str
    settings: dict[str, str] = {}


class FormValues(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the form sends."""

    roles: dict[str, RoleValues]


class FieldProblem(msgspec.Struct, frozen=True):
    """A problem, placed at a field: ``instances``, ``setting:<name>``, ``role`` or "" (the form)."""

    role: str
    field: str
    message: str


class CheckedConfiguration(msgspec.Struct, frozen=True):
    """The configuration the form makes (base64), and its problems (none: it may be applied)."""

    name: str
    configuration: str
    problems: list[FieldProblem]


async def route(rdfe: Rdfe, r: Request, rest: list[str]) -> Response:
    """Answer ``/portal/configuration[/check]``."""
    service, slot = _target(r)
    current = await _current(rdfe, r, service, slot)
    match rest:
        case []:
            rdfe._allow(r, "GET")
            return Response(200, form_of(current))
        case ["check"]:
            rdfe._allow(r, "POST")
            if int(r.headers.get("content-length", "0") or 0) > FORM_MAX_BYTES:
                raise ApiError(
                    413, "RequestBodyTooLarge", f"a configuration form is at most {FORM_MAX_BYTES} bytes"
                )
            r._max = min(r._max, FORM_MAX_BYTES)
            values = await r.json(FormValues)
            xml = apply_values(current.data, values)
            package = await _package(rdfe, r, service, slot)
            problems = await anyio.to_thread.run_sync(configuration_problems, xml, current.name, package)
            placed = place_problems(
                xml,
                [str(p) for p in problems if p.severity == "error"],
                [p.line for p in problems if p.severity == "error"],
            )
            return Response(
                200,
                CheckedConfiguration(
                    name=current.name, configuration=base64.b64encode(xml).decode(), problems=placed
                ),
            )
    raise bad_request(f"no portal page at {r.path}")


def _target(r: Request) -> tuple[str, Slot]:
    service = r.query.get("service", "")
    slot = r.query.get("slot", "production").lower()
    if not service or slot not in ("production", "staging"):
        raise bad_request("pass ?service=NAME and ?slot=production|staging", "InvalidQueryParameterValue")
    return service, slot  # type: ignore[return-value]


async def _current(rdfe: Rdfe, r: Request, service: str, slot: Slot) -> ConfigurationView:
    pool = await pool_of(rdfe, r, service)
    view = await rdfe.ask_ffe(Forward(pool=pool, command=GetConfiguration(service=service, slot=slot)))
    if not view.name.lower().endswith(".cscfg"):
        raise ApiError(
            409, "ConflictError", "this deployment's configuration is TOML: change it with `fabric config`"
        )
    return view


async def _package(rdfe: Rdfe, r: Request, service: str, slot: Slot) -> Path | None:
    pool = await pool_of(rdfe, r, service)
    view = await rdfe.ask_ffe(Forward(pool=pool, command=GetDeployment(service=service, slot=slot)))
    for sub in rdfe.store.subscriptions:
        hosted = sub.hosted_services.get(service.lower())
        if hosted is not None and view.name in hosted.packages:
            return Path(hosted.packages[view.name])
    return None


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def form_of(view: ConfigurationView) -> ConfigurationForm:
    """The fields of a .cscfg: each role's instance count and settings."""
    root = SafeXml.fromstring(view.data)
    roles = []
    for role in root.findall(_q("Role")):
        instances = role.find(_q("Instances"))
        settings = [
            SettingField(s.get("name", ""), s.get("value", ""))
            for s in role.findall(f"{_q('ConfigurationSettings')}/{_q('Setting')}")
        ]
        roles.append(
            RoleFields(
                role.get("name", ""), instances.get("count", "") if instances is not None else "", settings
            )
        )
    return ConfigurationForm(name=view.name, generation=view.generation, roles=roles)


def apply_values(data: bytes, values: FormValues) -> bytes:
    """The .cscfg with the form's values in place (everything else kept), one element a line."""
    root = SafeXml.fromstring(data)
    for role in root.findall(_q("Role")):
        given = values.roles.get(role.get("name", ""))
        if given is None:
            continue
        instances = role.find(_q("Instances"))
        if instances is not None:
            instances.set("count", given.instances.strip())
        for setting in role.findall(f"{_q('ConfigurationSettings')}/{_q('Setting')}"):
            if setting.get("name") in given.settings:
                setting.set("value", given.settings[setting.get("name", "")])
    ElementTree.register_namespace("", NS)
    ElementTree.indent(root)
    xml: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


_ROLE = re.compile(r'<Role\b[^>]*\bname="([^"]*)"')
_SETTING = re.compile(r'<Setting\b[^>]*\bname="([^"]*)"')


def place_problems(xml: bytes, messages: list[str], lines: list[int | None]) -> list[FieldProblem]:
    """Each problem at the field on its line (the form's XML has one element a line)."""
    at: dict[int, tuple[str, str]] = {}
    role = ""
    for number, line in enumerate(xml.decode("utf-8", errors="replace").splitlines(), start=1):
        if found := _ROLE.search(line):
            role = found.group(1)
            at[number] = (role, "role")
        elif "<Instances" in line:
            at[number] = (role, "instances")
        elif found := _SETTING.search(line):
            at[number] = (role, f"setting:{found.group(1)}")
    return [
        FieldProblem(*at.get(line or 0, ("", "")), message)
        for message, line in zip(messages, lines, strict=True)
    ]
