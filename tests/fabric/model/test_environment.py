"""RoleInstanceValue xpaths: exactly the documented forms resolve against an instance's document."""

from __future__ import annotations

import pytest

from fabric.model import (
    EndpointInfo,
    LocalResourceInfo,
    RoleEnvironmentDocument,
    UnresolvedXPathError,
    UnsupportedXPathError,
    XPathError,
    parse_role_instance_xpath,
    resolve_role_instance_value,
)

CI = "/RoleEnvironment/CurrentInstance"
DOC = RoleEnvironmentDocument(
    deployment_id="d3adb33f",
    emulated=True,
    instance_id="Worker_IN_2",
    role_name="Worker",
    fault_domain=1,
    update_domain=2,
    configuration_settings={"QueueName": "orders"},
    local_resources={"Scratch": LocalResourceInfo(path="/vm/C/Resources/Scratch", size_in_mb=1024)},
    endpoints={"Gossip": EndpointInfo(address="127.0.0.1", port=7000, protocol="tcp")},
)


@pytest.mark.parametrize(
    ("xpath", "value"),
    [
        ("/RoleEnvironment/Deployment/@id", "d3adb33f"),
        ("/RoleEnvironment/Deployment/@emulated", "true"),
        (f"{CI}/@id", "Worker_IN_2"),
        (f"{CI}/@roleName", "Worker"),
        (f"{CI}/@faultDomain", "1"),
        (f"{CI}/@updateDomain", "2"),
        (f"{CI}/ConfigurationSettings/ConfigurationSetting[@name='QueueName']/@value", "orders"),
        (f'{CI}/ConfigurationSettings/ConfigurationSetting[@name="QueueName"]/@value', "orders"),
        (f"{CI}/LocalResources/LocalResource[@name='Scratch']/@path", "/vm/C/Resources/Scratch"),
        (f"{CI}/LocalResources/LocalResource[@name='Scratch']/@sizeInMB", "1024"),
        (f"{CI}/Endpoints/Endpoint[@name='Gossip']/@port", "7000"),
        (f"{CI}/Endpoints/Endpoint[@name='Gossip']/@address", "127.0.0.1"),
        (f"{CI}/Endpoints/Endpoint[@name='Gossip']/@protocol", "tcp"),
        (f"  {CI}/Endpoints/Endpoint[ @name = 'Gossip' ]/@port ", "7000"),
    ],
)
def test_every_supported_xpath_resolves(xpath: str, value: str) -> None:
    assert resolve_role_instance_value(xpath, DOC) == value


@pytest.mark.parametrize(
    "xpath",
    [
        "/RoleEnvironment/Deployment/@name",
        f"{CI}/@vmSize",
        f"{CI}/Endpoints/Endpoint[1]/@port",
        f"{CI}/Endpoints/Endpoint[@name='Gossip']/@publicPort",
        "//Endpoint/@port",
        "/RoleEnvironment/Roles/Role[@name='Web']/Instances",
        "",
    ],
)
def test_any_other_form_is_a_named_error(xpath: str) -> None:
    with pytest.raises(UnsupportedXPathError, match="is not a supported RoleInstanceValue xpath"):
        resolve_role_instance_value(xpath, DOC)


@pytest.mark.parametrize(
    ("xpath", "what"),
    [
        (
            f"{CI}/ConfigurationSettings/ConfigurationSetting[@name='Nope']/@value",
            "configuration setting 'Nope'",
        ),
        (f"{CI}/LocalResources/LocalResource[@name='Nope']/@path", "local resource 'Nope'"),
        (f"{CI}/Endpoints/Endpoint[@name='Nope']/@port", "endpoint 'Nope'"),
    ],
)
def test_a_name_the_instance_lacks_is_unresolved(xpath: str, what: str) -> None:
    with pytest.raises(UnresolvedXPathError, match=what) as info:
        resolve_role_instance_value(xpath, DOC)
    assert isinstance(info.value, XPathError)


def test_parse_names_what_the_xpath_reads() -> None:
    ref = parse_role_instance_xpath(f"{CI}/LocalResources/LocalResource[@name='Scratch']/@sizeInMB")
    assert (ref.kind, ref.name, ref.attribute) == ("resource", "Scratch", "sizeInMB")
    assert parse_role_instance_xpath("/RoleEnvironment/Deployment/@id").name is None
