"""Fabric commands: what FFE asks a fabric controller, and the views it answers with.

Every command is an ask answered with a value (or raising ControllerError, which the front end
turns into a 4xx). Long operations answer at once with an OperationAccepted and finish in the
background; their outcome is read with GetOperation.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from actors import Request, register_error
from fabric.model.status import RoleStatus

Slot = Literal["production", "staging"]
#: A deployment's status: its goal when it is there, else what it is doing to get there.
DeploymentStatus = Literal[
    "Running", "Suspended", "Deploying", "RunningTransitioning", "SuspendedTransitioning", "Deleting"
]
UpgradeMode = Literal["Auto", "Manual", "Simultaneous"]
OperationStatus = Literal["InProgress", "Succeeded", "Failed"]


@register_error("code", "message", "status")
class ControllerError(Exception):
    """A command the controller refuses; ``code`` is a Service Management error code
    (ResourceNotFound, ConflictError, BadRequest, ...) and ``status`` its HTTP status.
    Registered: it keeps its code and status across a process link."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# -- commands -----------------------------------------------------------------------------------


class CreateDeployment(Request["OperationAccepted"], frozen=True, tag=True, kw_only=True):
    """Deploy a package (a .cspkg on disk) with a configuration (XML or TOML bytes)."""

    service: str
    slot: Slot
    name: str
    label: str = ""
    package_path: str
    configuration: bytes
    configuration_name: str = "ServiceConfiguration.cscfg"
    start: bool = True


class GetDeployment(Request["DeploymentView"], frozen=True, tag=True, kw_only=True):
    """Answer the DeploymentView of a slot."""

    service: str
    slot: Slot


class GetDeploymentPage(Request["DeploymentPage"], frozen=True, tag=True, kw_only=True):
    """Answer a slot's DeploymentView with at most ``limit`` instances, those after the one
    ``after`` names (a cursor: the last instance id of the previous page; "": from the first)."""

    service: str
    slot: Slot
    limit: int
    after: str = ""


class ListDeployments(Request["list[DeploymentView]"], frozen=True, tag=True, kw_only=True):
    """Answer every DeploymentView, by service and slot (``service``'s only, when given)."""

    service: str | None = None


class SummarizeDeployments(Request["list[DeploymentSummary]"], frozen=True, tag=True, kw_only=True):
    """Answer every deployment's DeploymentSummary, by service and slot (``service``'s only, when
    given): no instance's view is built, however many instances the deployments have."""

    service: str | None = None


class ChangeConfiguration(Request["OperationAccepted"], frozen=True, tag=True, kw_only=True):
    """Apply a new configuration: settings raise changing/changed; instance counts scale."""

    service: str
    slot: Slot
    configuration: bytes
    configuration_name: str = "ServiceConfiguration.cscfg"
    mode: UpgradeMode = "Auto"


class UpgradeDeployment(Request["OperationAccepted"], frozen=True, tag=True, kw_only=True):
    """Roll out a new package, update domain by update domain (or all at once)."""

    service: str
    slot: Slot
    package_path: str
    configuration: bytes | None = None
    configuration_name: str = "ServiceConfiguration.cscfg"
    mode: UpgradeMode = "Auto"
    role: str | None = None
    label: str = ""


class WalkUpgradeDomain(Request["OperationAccepted"], frozen=True, tag=True, kw_only=True):
    """In a Manual upgrade, upgrade this domain next (domains go in order)."""

    service: str
    slot: Slot
    upgrade_domain: int


class SetDeploymentStatus(Request["OperationAccepted"], frozen=True, tag=True, kw_only=True):
    """Suspend (stop every instance, keep the deployment) or run it again."""

    service: str
    slot: Slot
    status: Literal["Running", "Suspended"]


class InstanceAction(Request["OperationAccepted"], frozen=True, tag=True, kw_only=True):
    """Reboot (restart the guest OS), reimage (fresh disk) or rebuild (fresh disk and role
    drive) one role instance."""

    service: str
    slot: Slot
    instance_id: str
    action: Literal["reboot", "reimage", "rebuild"]


class DeleteDeployment(Request["OperationAccepted"], frozen=True, tag=True, kw_only=True):
    """Stop every instance and forget the deployment."""

    service: str
    slot: Slot


class SwapDeployments(Request["OperationAccepted"], frozen=True, tag=True, kw_only=True):
    """VIP swap: production and staging exchange their public ports."""

    service: str


class GetOperation(Request["OperationView"], frozen=True, tag=True, kw_only=True):
    """Answer the OperationView of a request id."""

    request_id: str


# -- views --------------------------------------------------------------------------------------


class OperationAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """A long command was accepted; follow it with GetOperation(request_id)."""

    request_id: str


class OperationView(msgspec.Struct, frozen=True, kw_only=True):
    """The state of an asynchronous operation."""

    request_id: str
    status: OperationStatus
    http_status_code: int = 200
    error_code: str = ""
    error_message: str = ""
    description: str = ""


class InstanceView(msgspec.Struct, frozen=True, kw_only=True):
    """One role instance, as `fabric status --json` shows it."""

    id: str
    role: str
    status: RoleStatus
    detail: str = ""
    host: str = ""
    update_domain: int = 0
    fault_domain: int = 0
    restarts: int = 0
    #: endpoint name -> "host:port" of this instance
    endpoints: dict[str, str] = {}
    #: input endpoints whose load balancer found it refusing connections (retried after a delay)
    refusing: list[str] = []
    #: the VM's own account, which its limited code runs as; 0 when the fabric does not run as
    #: root (then every role runs as the fabric's own user, without isolation)
    uid: int = 0


class PublicEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A load-balanced input endpoint: where users connect."""

    role: str
    name: str
    protocol: str
    host: str
    port: int
    #: the port the definition asked for, when it was taken and another was chosen
    requested_port: int = 0


class DeploymentView(msgspec.Struct, frozen=True, kw_only=True):
    """A deployment, as `fabric status --json` shows it (the stable machine-readable view)."""

    service: str
    slot: Slot
    name: str
    id: str
    label: str = ""
    status: DeploymentStatus
    upgrade_domain_count: int = 5
    #: during a Manual upgrade: the next domain to walk; -1 when none is in progress
    next_upgrade_domain: int = -1
    roles: dict[str, int] = {}
    instances: list[InstanceView] = []
    endpoints: list[PublicEndpoint] = []


class DeploymentSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A deployment without its instances: what a listing that does not show them needs."""

    service: str
    slot: Slot
    name: str
    status: DeploymentStatus
    #: its instances, by role
    roles: dict[str, int] = {}


class DeploymentPage(msgspec.Struct, frozen=True, kw_only=True):
    """A deployment with one page of its instances (in role, index order) and the endpoints of
    those instances; ``next_cursor`` asks for the next page ("": this was the last)."""

    deployment: DeploymentView
    #: instances in the deployment, on every page
    total: int
    next_cursor: str = ""


class InstanceLog(msgspec.Struct, frozen=True, kw_only=True):
    """An instance's logs on its joined host (see fabric.host.messages.GuestLog)."""

    host: str
    vm: str
    logs: dict[str, int]
    data: bytes = b""
    size: int = 0
    #: each log's path in the VM folder on its host (short name -> relative path)
    paths: dict[str, str] = {}


#: a host as `fabric hosts` shows it (fabric.controller.host_admin)
HostState = Literal["Ready", "NotReady", "Cordoned", "Dead"]


class HostView(msgspec.Struct, frozen=True, kw_only=True):
    """One host as `fabric hosts` shows it."""

    name: str
    pool: str
    kind: Literal["local", "joined"]
    address: str
    cores: int
    cores_used: int
    memory_mb: int
    memory_used_mb: int
    fault_domain: int
    #: seconds since it was last heard (None: its process does not run yet)
    heartbeat_age: float | None
    state: HostState
    cordoned: bool
    #: its process runs (local) or its link is up (joined)
    connected: bool
    pid: int
    instance_count: int
    #: the VMs placed there (the first fabric.controller.host_admin.MAX_LISTED)
    instances: list[str]


class HostPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of hosts, by name; ``next_offset`` asks for the next (None: this was the last)."""

    hosts: list[HostView]
    total: int
    next_offset: int | None = None
