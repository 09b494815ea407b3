"""The service definition (.csdef / service.toml): roles, endpoints, tasks, sites and settings."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal

import msgspec

MAX_INT = 2**31 - 1  # Azure's schema uses xs:int; anything larger is a typo, not a request

Name = Annotated[str, msgspec.Meta(min_length=1)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Protocol = Literal["http", "https", "tcp", "udp"]
ExecutionContext = Literal["limited", "elevated"]
TaskType = Literal["simple", "background", "foreground"]
RoleKind = Literal["web", "worker"]
PluginName = Literal["Diagnostics", "RemoteAccess", "RemoteForwarder"]

# Importing a plugin declares these settings and certificates for the role, as cspack did by
# merging the plugin's own csdef; the configuration may give them but need not.
PLUGIN_SETTINGS: dict[str, tuple[str, ...]] = {
    "Diagnostics": ("Microsoft.WindowsAzure.Plugins.Diagnostics.ConnectionString",),
    "RemoteAccess": tuple(
        f"Microsoft.WindowsAzure.Plugins.RemoteAccess.{name}"
        for name in ("Enabled", "AccountUsername", "AccountEncryptedPassword", "AccountExpiration")
    ),
    "RemoteForwarder": ("Microsoft.WindowsAzure.Plugins.RemoteForwarder.Enabled",),
}
PLUGIN_CERTIFICATES: dict[str, tuple[str, ...]] = {
    "RemoteAccess": ("Microsoft.WindowsAzure.Plugins.RemoteAccess.PasswordEncryption",),
}


class ModelStruct(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of every model struct: immutable, keyword-only, defaults left out when encoded."""


class Kept(ModelStruct, frozen=True):
    """A schema element or attribute we keep but do not act on (reported once as a warning)."""

    where: str
    name: str
    value: str


class LoadBalancerProbe(ModelStruct, frozen=True):
    """A custom health probe an input endpoint may name (LoadBalancerProbes/LoadBalancerProbe)."""

    name: Name
    protocol: Literal["http", "https", "tcp"]
    path: str | None = None
    port: Port | None = None
    interval_in_seconds: Annotated[int, msgspec.Meta(ge=5, le=MAX_INT)] = 15
    timeout_in_seconds: Annotated[int, msgspec.Meta(ge=11, le=MAX_INT)] = 31


class InputEndpoint(ModelStruct, frozen=True):
    """A load-balanced public endpoint; `local_port` None means the same as `port`, "*" any."""

    name: Name
    protocol: Protocol
    port: Port
    local_port: Port | Literal["*"] | None = None
    certificate: str | None = None
    ignore_role_instance_status: bool = False
    load_balancer_probe: str | None = None

    @property
    def fixed_local_port(self) -> int | None:
        """The port instances listen on, or None when the fabric picks one ("*")."""
        if self.local_port is None:
            return self.port
        return None if self.local_port == "*" else self.local_port


class PortRange(ModelStruct, frozen=True):
    """An inclusive range of ports (FixedPortRange)."""

    min: Port
    max: Port


class InternalEndpoint(ModelStruct, frozen=True):
    """An endpoint reachable only from the service's own instances."""

    name: Name
    protocol: Literal["http", "tcp", "udp", "any"]
    port: Port | None = None
    fixed_ports: tuple[Port, ...] = ()
    fixed_port_ranges: tuple[PortRange, ...] = ()


class InstanceInputEndpoint(ModelStruct, frozen=True):
    """A public port per instance, forwarded by the load balancer to `local_port`."""

    name: Name
    protocol: Literal["tcp", "udp"]
    local_port: Port
    allocate_public_port_from: PortRange


class Setting(ModelStruct, frozen=True):
    """A configuration setting the role declares; its value comes from the configuration."""

    name: Name


class LocalStorage(ModelStruct, frozen=True):
    """A LocalStorage resource: a folder on the instance's disk."""

    name: Name
    size_in_mb: Annotated[int, msgspec.Meta(ge=1, le=MAX_INT)] = 100
    clean_on_role_recycle: bool = True


class Import(ModelStruct, frozen=True):
    """A plugin module imported into the role (Diagnostics, RemoteAccess, RemoteForwarder)."""

    module_name: PluginName


class Certificate(ModelStruct, frozen=True):
    """A certificate the role needs installed; its thumbprint comes from the configuration."""

    name: Name
    store_location: Literal["LocalMachine", "CurrentUser"]
    store_name: Name
    permission_level: Literal["limitedOrElevated", "elevated"] = "limitedOrElevated"


class Content(ModelStruct, frozen=True):
    """A folder copied into the role's approot (Contents/Content/SourceDirectory)."""

    destination: str
    source_directory: str


class TaskVariable(ModelStruct, frozen=True):
    """An environment variable: a literal `value` or a RoleInstanceValue `xpath`, never both."""

    name: Name
    value: str | None = None
    xpath: str | None = None


class StartupTask(ModelStruct, frozen=True):
    """A startup task the bootstrapper runs before the role host (Startup/Task)."""

    command_line: str
    execution_context: ExecutionContext = "limited"
    task_type: TaskType = "simple"
    environment: tuple[TaskVariable, ...] = ()


class NetFxEntryPoint(ModelStruct, frozen=True):
    """Role code loaded into the role host; `assembly_name` names a Python file in the role."""

    assembly_name: str
    target_framework_version: str | None = None

    @property
    def module_file(self) -> str:
        """The Python file to load: `Worker.dll` is read as `Worker.py` so old csdefs work as is."""
        path = PurePosixPath(self.assembly_name.replace("\\", "/"))
        if path.suffix.lower() in (".dll", ".exe"):
            path = path.with_suffix(".py")
        return str(path)


class ProgramEntryPoint(ModelStruct, frozen=True):
    """A program the role host starts instead of loading role code."""

    command_line: str
    set_ready_on_process_start: bool = False


class EntryPoint(ModelStruct, frozen=True):
    """Runtime/EntryPoint: exactly one of `netfx` or `program`."""

    netfx: NetFxEntryPoint | None = None
    program: ProgramEntryPoint | None = None

    @property
    def kind(self) -> Literal["netfx", "program"]:
        """Which of the two entry points is given."""
        return "program" if self.program is not None else "netfx"


class Runtime(ModelStruct, frozen=True):
    """How the role host process runs: its privileges, environment and entry point."""

    execution_context: ExecutionContext = "limited"
    environment: tuple[TaskVariable, ...] = ()
    entry_point: EntryPoint | None = None


class VirtualDirectory(ModelStruct, frozen=True):
    """An IIS virtual directory mapped to a folder."""

    name: Name
    physical_directory: str


class VirtualApplication(ModelStruct, frozen=True):
    """An IIS application under a site, with its own folder."""

    name: Name
    physical_directory: str
    virtual_directories: tuple[VirtualDirectory, ...] = ()


class Binding(ModelStruct, frozen=True):
    """Binds a site to one of the role's endpoints, optionally for one host name."""

    name: Name
    endpoint_name: Name
    host_header: str | None = None


class Site(ModelStruct, frozen=True):
    """A web site of a full-IIS web role; `physical_directory` is relative to the definition."""

    name: Name
    physical_directory: str | None = None
    virtual_applications: tuple[VirtualApplication, ...] = ()
    virtual_directories: tuple[VirtualDirectory, ...] = ()
    bindings: tuple[Binding, ...] = ()


class RoleDefinition(ModelStruct, frozen=True):
    """A WebRole or WorkerRole."""

    name: Name
    kind: RoleKind
    vm_size: Name = "Small"
    enable_native_code_execution: bool = True
    certificates: tuple[Certificate, ...] = ()
    settings: tuple[Setting, ...] = ()
    imports: tuple[Import, ...] = ()
    input_endpoints: tuple[InputEndpoint, ...] = ()
    internal_endpoints: tuple[InternalEndpoint, ...] = ()
    instance_input_endpoints: tuple[InstanceInputEndpoint, ...] = ()
    local_storage: tuple[LocalStorage, ...] = ()
    runtime: Runtime | None = None
    sites: tuple[Site, ...] = ()
    startup: tuple[StartupTask, ...] = ()
    contents: tuple[Content, ...] = ()

    @property
    def is_hwc(self) -> bool:
        """A web role without Sites: the legacy single-site (hosted web core) kind."""
        return self.kind == "web" and not self.sites

    @property
    def endpoint_count(self) -> int:
        """Input, internal and instance input endpoints together."""
        return len(self.input_endpoints) + len(self.internal_endpoints) + len(self.instance_input_endpoints)

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        """Names of every endpoint of the role, in definition order."""
        return tuple(
            e.name
            for group in (
                self.input_endpoints,
                self.internal_endpoints,
                self.instance_input_endpoints,
            )
            for e in group
        )

    @property
    def plugins(self) -> tuple[str, ...]:
        """Names of the imported plugin modules."""
        return tuple(i.module_name for i in self.imports)

    @property
    def declared_settings(self) -> tuple[str, ...]:
        """Settings the role declares, its own first, then those its plugins declare."""
        own = tuple(s.name for s in self.settings)
        return own + tuple(s for p in self.plugins for s in PLUGIN_SETTINGS.get(p, ()))

    @property
    def declared_certificates(self) -> tuple[str, ...]:
        """Certificates the role declares, its own first, then those its plugins declare."""
        own = tuple(c.name for c in self.certificates)
        return own + tuple(c for p in self.plugins for c in PLUGIN_CERTIFICATES.get(p, ()))


class ServiceDefinition(ModelStruct, frozen=True):
    """The whole service definition: one to 25 roles and the probes they share."""

    name: Name
    upgrade_domain_count: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    topology_change_discovery: Literal["Blast", "UpgradeDomainWalk"] | None = None
    schema_version: str | None = None
    load_balancer_probes: tuple[LoadBalancerProbe, ...] = ()
    roles: tuple[RoleDefinition, ...] = ()
    kept: tuple[Kept, ...] = ()

    def role(self, name: str) -> RoleDefinition:
        """The role called `name`; raises KeyError if there is none."""
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(name)
