"""Loading the Shop service in both forms: the model, Azure's defaults, and choosing a config."""

from __future__ import annotations

import codecs
import shutil
from pathlib import Path

import msgspec
import pytest

from fabric.model import (
    InputEndpoint,
    LoadBalancerProbe,
    LocalStorage,
    ModelError,
    StartupTask,
    definition_from_xml,
    load_service,
    read_configuration,
    read_definition,
    vm_size,
)
from fabric.model.vmsizes import UnknownVmSizeError

NS = 'xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition"'


def test_shop_loads_with_everything_the_fixture_declares(shop: Path) -> None:
    service = load_service(shop)
    d = service.definition
    web, worker = d.roles
    assert (web.kind, web.is_hwc, worker.kind) == ("web", False, "worker")
    assert [s.name for s in web.sites] == ["Store", "Admin"]
    assert [b.name for b in web.sites[0].bindings] == ["HttpIn", "HttpsIn"]
    assert web.sites[0].bindings[1].host_header == "shop.example.com"
    assert (len(worker.input_endpoints), len(worker.internal_endpoints)) == (1, 3)
    assert worker.instance_input_endpoints[0].allocate_public_port_from.max == 10100
    assert worker.internal_endpoints[1].fixed_port_ranges[0].min == 8100
    assert worker.internal_endpoints[2].fixed_ports == (5353,)
    assert worker.input_endpoints[0].local_port == "*"
    assert [t.task_type for t in worker.startup] == ["simple", "background", "foreground"]
    assert worker.startup[1].environment[0].xpath == "/RoleEnvironment/Deployment/@id"
    assert web.plugins == ("Diagnostics", "RemoteAccess", "RemoteForwarder")
    assert web.local_storage == (LocalStorage(name="Uploads", size_in_mb=512, clean_on_role_recycle=False),)
    assert web.certificates[0].permission_level == "limitedOrElevated"
    assert web.runtime and web.runtime.entry_point and web.runtime.entry_point.netfx
    assert web.runtime.entry_point.netfx.module_file == "WebFront.py"
    assert worker.runtime and worker.runtime.entry_point and worker.runtime.entry_point.kind == "program"
    assert worker.contents[0].source_directory == "assets"
    assert service.configuration_file.endswith("ServiceConfiguration.Local.cscfg")
    assert (service.instances("WebFront"), service.instances("Worker")) == (2, 3)
    assert service.role_dir("Worker") == (shop / "Worker").resolve()
    assert service.content_dir("WebFront", "admin_site") == (shop / "admin_site").resolve()
    # Startup@priority is in the schema but not acted on: kept, and reported once as a warning.
    assert [(k.name, k.value) for k in d.kept] == [("priority", "-1")]
    assert [(w.severity, w.line) for w in service.warnings] == [("warning", 94)]


def test_azure_defaults_fill_what_the_xml_leaves_out() -> None:
    d = definition_from_xml(
        f"""<ServiceDefinition name="S" {NS}>
          <LoadBalancerProbes><LoadBalancerProbe name="p" protocol="tcp" /></LoadBalancerProbes>
          <WorkerRole name="W">
            <Endpoints><InputEndpoint name="e" protocol="tcp" port="81" /></Endpoints>
            <LocalResources><LocalStorage name="s" /></LocalResources>
            <Startup><Task commandLine="x" /></Startup>
          </WorkerRole>
        </ServiceDefinition>""".encode()
    )
    role = d.roles[0]
    assert d.upgrade_domain_count == 5
    assert (role.vm_size, role.enable_native_code_execution) == ("Small", True)
    assert d.load_balancer_probes[0] == LoadBalancerProbe(
        name="p", protocol="tcp", interval_in_seconds=15, timeout_in_seconds=31
    )
    assert role.local_storage[0] == LocalStorage(name="s", size_in_mb=100, clean_on_role_recycle=True)
    assert role.startup[0] == StartupTask(command_line="x", execution_context="limited", task_type="simple")
    endpoint = role.input_endpoints[0]
    assert endpoint == InputEndpoint(name="e", protocol="tcp", port=81, ignore_role_instance_status=False)
    assert endpoint.fixed_local_port == 81  # localPort defaults to port


def test_web_role_without_sites_is_hwc_and_legacy_local_storage_is_read() -> None:
    d = definition_from_xml(
        f"""<ServiceDefinition name="S" {NS}><WebRole name="W">
          <LocalStorage name="old" sizeInMB="5" />
        </WebRole></ServiceDefinition>""".encode()
    )
    assert d.roles[0].is_hwc
    assert d.roles[0].local_storage[0].size_in_mb == 5


def test_toml_form_is_the_same_model(shop: Path, shop_toml: Path) -> None:
    from_xml = load_service(shop)
    from_toml = load_service(shop_toml)
    assert from_toml.definition == msgspec.structs.replace(from_xml.definition, kept=())
    assert from_toml.configuration == from_xml.configuration
    assert from_toml.content_dirs.keys() == from_xml.content_dirs.keys()
    assert from_toml.warnings == ()


def test_configuration_choice_local_then_cloud_then_the_only_one(shop: Path) -> None:
    assert load_service(shop).configuration_file.endswith(".Local.cscfg")
    (shop / "ServiceConfiguration.Local.cscfg").unlink()
    assert load_service(shop).configuration.role("WebFront").instances == 4  # Cloud
    (shop / "ServiceConfiguration.Cloud.cscfg").rename(shop / "ServiceConfiguration.Staging.cscfg")
    assert load_service(shop).configuration_file.endswith(".Staging.cscfg")
    shutil.copy(shop / "ServiceConfiguration.Staging.cscfg", shop / "ServiceConfiguration.Test.cscfg")
    with pytest.raises(ModelError, match="several configurations"):
        load_service(shop)
    explicit = load_service(shop, shop / "ServiceConfiguration.Test.cscfg")
    assert explicit.configuration_file.endswith("Test.cscfg")


def test_no_configuration_and_two_definitions_are_named(shop: Path, shop_toml: Path) -> None:
    for cfg in shop.glob("*.cscfg"):
        cfg.unlink()
    with pytest.raises(ModelError, match=r"has no configuration; add ServiceConfiguration.Local.cscfg"):
        load_service(shop)
    shutil.copy(shop_toml / "service.toml", shop_toml / "ServiceDefinition.csdef")
    with pytest.raises(ModelError, match=r"has both ServiceDefinition.csdef and service.toml"):
        load_service(shop_toml)


def test_forms_mix_through_an_explicit_config_and_a_csdef_path(shop: Path, shop_toml: Path) -> None:
    service = load_service(shop / "ServiceDefinition.csdef", shop_toml / "config.local.toml")
    assert service.configuration.role("Worker").instances == 3
    assert load_service(shop_toml / "service.toml").definition.name == "Shop"


def test_read_definition_and_configuration_alone(shop: Path) -> None:
    assert read_definition(shop / "ServiceDefinition.csdef").name == "Shop"
    assert read_configuration(shop / "ServiceConfiguration.Cloud.cscfg").role("Worker").instances == 6


def test_utf8_bom_as_visual_studio_writes_it_is_accepted(shop: Path) -> None:
    path = shop / "ServiceDefinition.csdef"
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    assert load_service(shop).definition.name == "Shop"


def test_vm_sizes_map_to_cores_and_memory() -> None:
    assert (vm_size("Small").cores, vm_size("Small").memory_mb) == (1, 1792)
    assert vm_size("extralarge") == vm_size("A4") == vm_size("ExtraLarge")
    assert vm_size("Standard_D2_v2").cores == 2
    assert vm_size("A9").memory_mb == 112 * 1024
    with pytest.raises(UnknownVmSizeError):
        vm_size("Huge")


def test_missing_role_folder_is_a_warning_for_validate(shop: Path) -> None:
    shutil.rmtree(shop / "Worker")
    service = load_service(shop)
    assert any("has no code folder" in w.message for w in service.warnings)
    with pytest.raises(ModelError, match="has no code folder"):
        load_service(shop, require_code=True)


def test_strict_makes_kept_elements_errors(shop: Path) -> None:
    with pytest.raises(ModelError) as info:
        load_service(shop, strict=True)
    assert [p.severity for p in info.value.problems] == ["error"]
    assert "priority is kept but not acted on here (strict mode)" in str(info.value)
