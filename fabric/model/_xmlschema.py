"""How the Azure XML schemas map onto the model structs (one table, read and written alike)."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFINITION_NS = "http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition"
CONFIGURATION_NS = "http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"


@dataclass(frozen=True)
class Child:
    """A child element: `path` is its wrapper elements then its own tag.

    The child is a struct (`el`) or a scalar read from one attribute (`attr`) of the element.
    """

    path: tuple[str, ...]
    field: str
    el: El | None = None
    attr: str | None = None
    many: bool = False

    @property
    def display(self) -> str:
        """How the field is named in messages: `Instances@count`, `Endpoints/InputEndpoint`."""
        return "/".join(self.path) + (f"@{self.attr}" if self.attr else "")


@dataclass(frozen=True)
class El:
    """An element that becomes a struct: its attributes, children and implied field values."""

    tag: str
    attrs: dict[str, str]
    children: tuple[Child, ...] = ()
    fixed: dict[str, str] = field(default_factory=dict)
    kept_attrs: frozenset[str] = frozenset()
    kept_children: frozenset[str] = frozenset()
    wrapper_kept_attrs: dict[str, frozenset[str]] = field(default_factory=dict)


def _same(*names: str) -> dict[str, str]:
    return {n: n for n in names}


PORT_RANGE = El("FixedPortRange", _same("min", "max"))
PROBE = El(
    "LoadBalancerProbe",
    _same("name", "protocol", "path", "port")
    | {"intervalInSeconds": "interval_in_seconds", "timeoutInSeconds": "timeout_in_seconds"},
)
INPUT_ENDPOINT = El(
    "InputEndpoint",
    _same("name", "protocol", "port", "certificate")
    | {
        "localPort": "local_port",
        "ignoreRoleInstanceStatus": "ignore_role_instance_status",
        "loadBalancerProbe": "load_balancer_probe",
    },
    kept_attrs=frozenset({"idleTimeoutInMinutes", "loadBalancerDistribution", "loadBalancer"}),
)
INTERNAL_ENDPOINT = El(
    "InternalEndpoint",
    _same("name", "protocol", "port"),
    (
        Child(("FixedPort",), "fixed_ports", attr="port", many=True),
        Child(("FixedPortRange",), "fixed_port_ranges", el=PORT_RANGE, many=True),
    ),
)
INSTANCE_INPUT_ENDPOINT = El(
    "InstanceInputEndpoint",
    _same("name", "protocol") | {"localPort": "local_port"},
    (Child(("AllocatePublicPortFrom", "FixedPortRange"), "allocate_public_port_from", PORT_RANGE),),
    kept_attrs=frozenset({"idleTimeoutInMinutes", "loadBalancerDistribution"}),
)
SETTING = El("Setting", _same("name"))
LOCAL_STORAGE = El(
    "LocalStorage",
    _same("name") | {"sizeInMB": "size_in_mb", "cleanOnRoleRecycle": "clean_on_role_recycle"},
)
IMPORT = El("Import", {"moduleName": "module_name"})
CERTIFICATE = El(
    "Certificate",
    _same("name")
    | {
        "storeLocation": "store_location",
        "storeName": "store_name",
        "permissionLevel": "permission_level",
    },
)
CONTENT = El(
    "Content",
    _same("destination"),
    (Child(("SourceDirectory",), "source_directory", attr="path"),),
)
VARIABLE = El(
    "Variable",
    _same("name", "value"),
    (Child(("RoleInstanceValue",), "xpath", attr="xpath"),),
)
TASK = El(
    "Task",
    {
        "commandLine": "command_line",
        "executionContext": "execution_context",
        "taskType": "task_type",
    },
    (Child(("Environment", "Variable"), "environment", VARIABLE, many=True),),
)
NETFX = El(
    "NetFxEntryPoint",
    {"assemblyName": "assembly_name", "targetFrameworkVersion": "target_framework_version"},
)
PROGRAM = El(
    "ProgramEntryPoint",
    {"commandLine": "command_line", "setReadyOnProcessStart": "set_ready_on_process_start"},
)
ENTRY_POINT = El(
    "EntryPoint",
    {},
    (
        Child(("NetFxEntryPoint",), "netfx", NETFX),
        Child(("ProgramEntryPoint",), "program", PROGRAM),
    ),
)
RUNTIME = El(
    "Runtime",
    {"executionContext": "execution_context"},
    (
        Child(("Environment", "Variable"), "environment", VARIABLE, many=True),
        Child(("EntryPoint",), "entry_point", ENTRY_POINT),
    ),
)
VIRTUAL_DIRECTORY = El("VirtualDirectory", _same("name") | {"physicalDirectory": "physical_directory"})
VIRTUAL_APPLICATION = El(
    "VirtualApplication",
    _same("name") | {"physicalDirectory": "physical_directory"},
    (Child(("VirtualDirectory",), "virtual_directories", VIRTUAL_DIRECTORY, many=True),),
)
BINDING = El("Binding", _same("name") | {"endpointName": "endpoint_name", "hostHeader": "host_header"})
SITE = El(
    "Site",
    _same("name") | {"physicalDirectory": "physical_directory"},
    (
        Child(("VirtualApplication",), "virtual_applications", VIRTUAL_APPLICATION, many=True),
        Child(("VirtualDirectory",), "virtual_directories", VIRTUAL_DIRECTORY, many=True),
        Child(("Bindings", "Binding"), "bindings", BINDING, many=True),
    ),
)

_ROLE_ATTRS = _same("name") | {
    "vmsize": "vm_size",
    "enableNativeCodeExecution": "enable_native_code_execution",
}
_ROLE_CHILDREN = (
    Child(("Certificates", "Certificate"), "certificates", CERTIFICATE, many=True),
    Child(("ConfigurationSettings", "Setting"), "settings", SETTING, many=True),
    Child(("Imports", "Import"), "imports", IMPORT, many=True),
    Child(("Endpoints", "InputEndpoint"), "input_endpoints", INPUT_ENDPOINT, many=True),
    Child(("Endpoints", "InternalEndpoint"), "internal_endpoints", INTERNAL_ENDPOINT, many=True),
    Child(
        ("Endpoints", "InstanceInputEndpoint"),
        "instance_input_endpoints",
        INSTANCE_INPUT_ENDPOINT,
        many=True,
    ),
    Child(("LocalResources", "LocalStorage"), "local_storage", LOCAL_STORAGE, many=True),
    # Older SDKs put LocalStorage straight under the role; read it, write the modern form.
    Child(("LocalStorage",), "local_storage", LOCAL_STORAGE, many=True),
    Child(("Runtime",), "runtime", RUNTIME),
)
_ROLE_TAIL = (
    Child(("Startup", "Task"), "startup", TASK, many=True),
    Child(("Contents", "Content"), "contents", CONTENT, many=True),
)
_STARTUP_PRIORITY = {"Startup": frozenset({"priority"})}  # "for internal use only"

WEB_ROLE = El(
    "WebRole",
    _ROLE_ATTRS,
    (*_ROLE_CHILDREN, Child(("Sites", "Site"), "sites", SITE, many=True), *_ROLE_TAIL),
    fixed={"kind": "web"},
    wrapper_kept_attrs=_STARTUP_PRIORITY,
)
WORKER_ROLE = El(
    "WorkerRole",
    _ROLE_ATTRS,
    (*_ROLE_CHILDREN, *_ROLE_TAIL),
    fixed={"kind": "worker"},
    wrapper_kept_attrs=_STARTUP_PRIORITY,
)
SERVICE_DEFINITION = El(
    "ServiceDefinition",
    _same("name")
    | {
        "upgradeDomainCount": "upgrade_domain_count",
        "topologyChangeDiscovery": "topology_change_discovery",
        "schemaVersion": "schema_version",
    },
    (
        Child(("LoadBalancerProbes", "LoadBalancerProbe"), "load_balancer_probes", PROBE, many=True),
        Child(("WebRole",), "roles", WEB_ROLE, many=True),
        Child(("WorkerRole",), "roles", WORKER_ROLE, many=True),
    ),
    kept_children=frozenset({"NetworkTrafficRules"}),
)

CONFIG_SETTING = El("Setting", _same("name", "value"))
CONFIG_CERTIFICATE = El(
    "Certificate", _same("name", "thumbprint") | {"thumbprintAlgorithm": "thumbprint_algorithm"}
)
ROLE_CONFIGURATION = El(
    "Role",
    _same("name"),
    (
        Child(("Instances",), "instances", attr="count"),
        Child(("ConfigurationSettings", "Setting"), "settings", CONFIG_SETTING, many=True),
        Child(("Certificates", "Certificate"), "certificates", CONFIG_CERTIFICATE, many=True),
    ),
    kept_attrs=frozenset({"vmName"}),
    kept_children=frozenset({"OsImage"}),
)
SERVICE_CONFIGURATION = El(
    "ServiceConfiguration",
    {
        "serviceName": "service_name",
        "osFamily": "os_family",
        "osVersion": "os_version",
        "schemaVersion": "schema_version",
    },
    (Child(("Role",), "roles", ROLE_CONFIGURATION, many=True),),
    kept_children=frozenset({"NetworkConfiguration"}),
)
