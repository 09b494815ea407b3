"""The service model: definitions, configurations and packages, in Azure's XML or in TOML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric.lazy import lazy_exports

# Loaded on first use: a VM process needs a few model types, not the XML, TOML and package
# machinery behind the rest, and each process of a VM pays for what it imports.
_EXPORTS: dict[str, str] = {
    "DEFAULT_LIMITS": "fabric.model._manifest",
    "ExtractLimits": "fabric.model._manifest",
    "Manifest": "fabric.model._manifest",
    "ManifestEntry": "fabric.model._manifest",
    "CertificateThumbprint": "fabric.model.configuration",
    "ConfigurationSetting": "fabric.model.configuration",
    "RoleConfiguration": "fabric.model.configuration",
    "ServiceConfiguration": "fabric.model.configuration",
    "PLUGIN_CERTIFICATES": "fabric.model.definition",
    "PLUGIN_SETTINGS": "fabric.model.definition",
    "Binding": "fabric.model.definition",
    "Certificate": "fabric.model.definition",
    "Content": "fabric.model.definition",
    "EntryPoint": "fabric.model.definition",
    "Import": "fabric.model.definition",
    "InputEndpoint": "fabric.model.definition",
    "InstanceInputEndpoint": "fabric.model.definition",
    "InternalEndpoint": "fabric.model.definition",
    "Kept": "fabric.model.definition",
    "LoadBalancerProbe": "fabric.model.definition",
    "LocalStorage": "fabric.model.definition",
    "NetFxEntryPoint": "fabric.model.definition",
    "PortRange": "fabric.model.definition",
    "ProgramEntryPoint": "fabric.model.definition",
    "RoleDefinition": "fabric.model.definition",
    "Runtime": "fabric.model.definition",
    "ServiceDefinition": "fabric.model.definition",
    "Setting": "fabric.model.definition",
    "Site": "fabric.model.definition",
    "StartupTask": "fabric.model.definition",
    "TaskVariable": "fabric.model.definition",
    "VirtualApplication": "fabric.model.definition",
    "VirtualDirectory": "fabric.model.definition",
    "SUPPORTED_XPATHS": "fabric.model.environment",
    "EndpointInfo": "fabric.model.environment",
    "LocalResourceInfo": "fabric.model.environment",
    "RoleEnvironmentDocument": "fabric.model.environment",
    "XPathRef": "fabric.model.environment",
    "parse_role_instance_xpath": "fabric.model.environment",
    "resolve_role_instance_value": "fabric.model.environment",
    "ModelError": "fabric.model.errors",
    "PackageError": "fabric.model.errors",
    "Problem": "fabric.model.errors",
    "UnresolvedXPathError": "fabric.model.errors",
    "UnsupportedXPathError": "fabric.model.errors",
    "XPathError": "fabric.model.errors",
    "build_package": "fabric.model.package",
    "extract_package": "fabric.model.package",
    "read_package": "fabric.model.package",
    "Service": "fabric.model.service",
    "find_configuration": "fabric.model.service",
    "load_service": "fabric.model.service",
    "read_configuration": "fabric.model.service",
    "read_definition": "fabric.model.service",
    "configuration_from_toml": "fabric.model.toml",
    "configuration_to_toml": "fabric.model.toml",
    "definition_from_toml": "fabric.model.toml",
    "definition_to_toml": "fabric.model.toml",
    "VM_SIZES": "fabric.model.vmsizes",
    "UnknownVmSizeError": "fabric.model.vmsizes",
    "VmSize": "fabric.model.vmsizes",
    "vm_size": "fabric.model.vmsizes",
    "configuration_from_xml": "fabric.model.xml",
    "configuration_to_xml": "fabric.model.xml",
    "definition_from_xml": "fabric.model.xml",
    "definition_to_xml": "fabric.model.xml",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fabric.model._manifest import DEFAULT_LIMITS as DEFAULT_LIMITS
    from fabric.model._manifest import ExtractLimits as ExtractLimits
    from fabric.model._manifest import Manifest as Manifest
    from fabric.model._manifest import ManifestEntry as ManifestEntry
    from fabric.model.configuration import CertificateThumbprint as CertificateThumbprint
    from fabric.model.configuration import ConfigurationSetting as ConfigurationSetting
    from fabric.model.configuration import RoleConfiguration as RoleConfiguration
    from fabric.model.configuration import ServiceConfiguration as ServiceConfiguration
    from fabric.model.definition import PLUGIN_CERTIFICATES as PLUGIN_CERTIFICATES
    from fabric.model.definition import PLUGIN_SETTINGS as PLUGIN_SETTINGS
    from fabric.model.definition import Binding as Binding
    from fabric.model.definition import Certificate as Certificate
    from fabric.model.definition import Content as Content
    from fabric.model.definition import EntryPoint as EntryPoint
    from fabric.model.definition import Import as Import
    from fabric.model.definition import InputEndpoint as InputEndpoint
    from fabric.model.definition import InstanceInputEndpoint as InstanceInputEndpoint
    from fabric.model.definition import InternalEndpoint as InternalEndpoint
    from fabric.model.definition import Kept as Kept
    from fabric.model.definition import LoadBalancerProbe as LoadBalancerProbe
    from fabric.model.definition import LocalStorage as LocalStorage
    from fabric.model.definition import NetFxEntryPoint as NetFxEntryPoint
    from fabric.model.definition import PortRange as PortRange
    from fabric.model.definition import ProgramEntryPoint as ProgramEntryPoint
    from fabric.model.definition import RoleDefinition as RoleDefinition
    from fabric.model.definition import Runtime as Runtime
    from fabric.model.definition import ServiceDefinition as ServiceDefinition
    from fabric.model.definition import Setting as Setting
    from fabric.model.definition import Site as Site
    from fabric.model.definition import StartupTask as StartupTask
    from fabric.model.definition import TaskVariable as TaskVariable
    from fabric.model.definition import VirtualApplication as VirtualApplication
    from fabric.model.definition import VirtualDirectory as VirtualDirectory
    from fabric.model.environment import SUPPORTED_XPATHS as SUPPORTED_XPATHS
    from fabric.model.environment import EndpointInfo as EndpointInfo
    from fabric.model.environment import LocalResourceInfo as LocalResourceInfo
    from fabric.model.environment import RoleEnvironmentDocument as RoleEnvironmentDocument
    from fabric.model.environment import XPathRef as XPathRef
    from fabric.model.environment import parse_role_instance_xpath as parse_role_instance_xpath
    from fabric.model.environment import resolve_role_instance_value as resolve_role_instance_value
    from fabric.model.errors import ModelError as ModelError
    from fabric.model.errors import PackageError as PackageError
    from fabric.model.errors import Problem as Problem
    from fabric.model.errors import UnresolvedXPathError as UnresolvedXPathError
    from fabric.model.errors import UnsupportedXPathError as UnsupportedXPathError
    from fabric.model.errors import XPathError as XPathError
    from fabric.model.package import build_package as build_package
    from fabric.model.package import extract_package as extract_package
    from fabric.model.package import read_package as read_package
    from fabric.model.service import Service as Service
    from fabric.model.service import find_configuration as find_configuration
    from fabric.model.service import load_service as load_service
    from fabric.model.service import read_configuration as read_configuration
    from fabric.model.service import read_definition as read_definition
    from fabric.model.toml import configuration_from_toml as configuration_from_toml
    from fabric.model.toml import configuration_to_toml as configuration_to_toml
    from fabric.model.toml import definition_from_toml as definition_from_toml
    from fabric.model.toml import definition_to_toml as definition_to_toml
    from fabric.model.vmsizes import VM_SIZES as VM_SIZES
    from fabric.model.vmsizes import UnknownVmSizeError as UnknownVmSizeError
    from fabric.model.vmsizes import VmSize as VmSize
    from fabric.model.vmsizes import vm_size as vm_size
    from fabric.model.xml import configuration_from_xml as configuration_from_xml
    from fabric.model.xml import configuration_to_xml as configuration_to_xml
    from fabric.model.xml import definition_from_xml as definition_from_xml
    from fabric.model.xml import definition_to_xml as definition_to_xml


__getattr__ = lazy_exports(globals(), _EXPORTS)
