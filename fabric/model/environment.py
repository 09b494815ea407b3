"""The role environment document an instance sees, and the RoleInstanceValue xpaths into it."""

from __future__ import annotations

import re
from typing import Literal, NoReturn

import msgspec

from fabric.model.errors import Problem, UnresolvedXPathError, UnsupportedXPathError

XPathKind = Literal["deployment", "instance", "setting", "resource", "endpoint"]


class LocalResourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Where a LocalStorage resource lives on this instance, and its size."""

    path: str
    size_in_mb: int


class EndpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The address and port an instance endpoint is bound to."""

    address: str
    port: int
    protocol: str


class RoleEnvironmentDocument(msgspec.Struct, frozen=True, kw_only=True):
    """What /RoleEnvironment holds for one role instance (built by the guest per instance)."""

    deployment_id: str
    emulated: bool
    instance_id: str
    role_name: str
    fault_domain: int
    update_domain: int
    configuration_settings: dict[str, str] = msgspec.field(default_factory=dict)
    local_resources: dict[str, LocalResourceInfo] = msgspec.field(default_factory=dict)
    endpoints: dict[str, EndpointInfo] = msgspec.field(default_factory=dict)


class XPathRef(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed RoleInstanceValue xpath: what it reads, by which name, which attribute."""

    kind: XPathKind
    attribute: str
    name: str | None = None


_NAME = r"""\[\s*@name\s*=\s*(?:'([^']*)'|"([^"]*)")\s*\]"""
_CI = "/RoleEnvironment/CurrentInstance"
_FORMS: tuple[tuple[XPathKind, re.Pattern[str]], ...] = (
    ("deployment", re.compile(r"/RoleEnvironment/Deployment/@(id|emulated)")),
    ("instance", re.compile(_CI + r"/@(id|roleName|faultDomain|updateDomain)")),
    (
        "setting",
        re.compile(_CI + r"/ConfigurationSettings/ConfigurationSetting" + _NAME + r"/@(value)"),
    ),
    ("resource", re.compile(_CI + r"/LocalResources/LocalResource" + _NAME + r"/@(path|sizeInMB)")),
    ("endpoint", re.compile(_CI + r"/Endpoints/Endpoint" + _NAME + r"/@(port|address|protocol)")),
)
SUPPORTED_XPATHS = (
    "/RoleEnvironment/Deployment/@id",
    "/RoleEnvironment/Deployment/@emulated",
    f"{_CI}/@id | @roleName | @faultDomain | @updateDomain",
    f"{_CI}/ConfigurationSettings/ConfigurationSetting[@name='X']/@value",
    f"{_CI}/LocalResources/LocalResource[@name='X']/@path | @sizeInMB",
    f"{_CI}/Endpoints/Endpoint[@name='X']/@port | @address | @protocol",
)


def _fail(cls: type[UnsupportedXPathError | UnresolvedXPathError], xpath: str, why: str) -> NoReturn:
    problem = Problem(
        file="<role environment>",
        element="RoleInstanceValue",
        attribute="xpath",
        message=f"'{xpath}' {why}",
    )
    raise cls([problem])


def parse_role_instance_xpath(xpath: str) -> XPathRef:
    """Parse one of the supported xpaths; raises UnsupportedXPathError for any other form."""
    text = xpath.strip()
    for kind, pattern in _FORMS:
        match = pattern.fullmatch(text)
        if match:
            groups = match.groups()
            name = None if len(groups) == 1 else (groups[0] if groups[0] is not None else groups[1])
            return XPathRef(kind=kind, attribute=groups[-1], name=name)
    _fail(
        UnsupportedXPathError,
        xpath,
        "is not a supported RoleInstanceValue xpath; use one of: " + ", ".join(SUPPORTED_XPATHS),
    )


def resolve_role_instance_value(xpath: str, doc: RoleEnvironmentDocument) -> str:
    """The string value an xpath selects in `doc`, as Azure put it in the environment variable.

    Raises UnsupportedXPathError for an unknown form and UnresolvedXPathError when the named
    setting, resource or endpoint is not in the document.
    """
    ref = parse_role_instance_xpath(xpath)
    if ref.kind == "deployment":
        return doc.deployment_id if ref.attribute == "id" else str(doc.emulated).lower()
    if ref.kind == "instance":
        return {
            "id": doc.instance_id,
            "roleName": doc.role_name,
            "faultDomain": str(doc.fault_domain),
            "updateDomain": str(doc.update_domain),
        }[ref.attribute]
    assert ref.name is not None
    if ref.kind == "setting" and ref.name in doc.configuration_settings:
        return doc.configuration_settings[ref.name]
    if ref.kind == "resource" and ref.name in doc.local_resources:
        resource = doc.local_resources[ref.name]
        return resource.path if ref.attribute == "path" else str(resource.size_in_mb)
    if ref.kind == "endpoint" and ref.name in doc.endpoints:
        endpoint = doc.endpoints[ref.name]
        return {"port": str(endpoint.port), "address": endpoint.address, "protocol": endpoint.protocol}[
            ref.attribute
        ]
    what = {"setting": "configuration setting", "resource": "local resource", "endpoint": "endpoint"}
    _fail(
        UnresolvedXPathError, xpath, f"names {what[ref.kind]} '{ref.name}', which this instance does not have"
    )
