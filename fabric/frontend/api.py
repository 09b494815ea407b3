"""The JSON shapes of the HTTP API: request bodies, responses and the error body.

Names follow the Service Management API's XML elements (PascalCase), carried as JSON; binary
fields (a package, a configuration) are base64 strings, as the Service Management API carried
a configuration. Deployments are answered as ``fabric.controller.messages.DeploymentView``
verbatim (snake_case): that is the stable view ``fabric status --json`` prints too.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import msgspec

from actors import register_error
from fabric.controller.messages import DeploymentView, UpgradeMode

#: DNS-label rule for hosted service names (they were the <name>.cloudapp.net prefix)
SERVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"
Label = Annotated[str, msgspec.Meta(max_length=100)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f/\\?#]+$")]


@register_error("status", "code", "message")
class ApiError(Exception):
    """A request the API refuses: ``status`` is the HTTP status, ``code`` the Service
    Management error code, ``message`` says what to change. Registered: FFE raises it, and it
    keeps its status and code through any actor link (see actors.register_error)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(message: str) -> ApiError:
    """404 ResourceNotFound."""
    return ApiError(404, "ResourceNotFound", message)


def bad_request(message: str, code: str = "BadRequest") -> ApiError:
    """400 with ``code`` (BadRequest unless named)."""
    return ApiError(400, code, message)


def conflict(message: str) -> ApiError:
    """409 ConflictError."""
    return ApiError(409, "ConflictError", message)


class _Body(msgspec.Struct, frozen=True, kw_only=True, rename="pascal", forbid_unknown_fields=True):
    """Base of every request body: PascalCase keys, unknown keys refused."""


# -- request bodies ------------------------------------------------------------------------------


class CreateHostedService(_Body, frozen=True, kw_only=True):
    """POST .../services/hostedservices. Give Location or AffinityGroup (or neither: any pool)."""

    service_name: Annotated[str, msgspec.Meta(pattern=SERVICE_NAME_PATTERN)]
    label: Label = ""
    description: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    location: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    affinity_group: Annotated[str, msgspec.Meta(min_length=1, max_length=63)] | None = None


class UpdateHostedService(_Body, frozen=True, kw_only=True):
    """PUT .../hostedservices/{service}: a new label or description."""

    label: Label | None = None
    description: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class CreateDeployment(_Body, frozen=True, kw_only=True):
    """POST .../deploymentslots/{slot}: the .cspkg and (optionally) the configuration, base64.

    Without Configuration the one inside the package is used. ConfigurationName tells the
    form: a name ending in .toml is a configuration TOML, anything else .cscfg XML.
    """

    name: Name
    label: Label = ""
    package: bytes
    configuration: bytes | None = None
    configuration_name: Name = "ServiceConfiguration.cscfg"
    start_deployment: bool = True


class ChangeConfiguration(_Body, frozen=True, kw_only=True):
    """POST .../deploymentslots/{slot}?comp=config."""

    configuration: bytes
    configuration_name: Name = "ServiceConfiguration.cscfg"
    mode: UpgradeMode = "Auto"


class UpgradeDeployment(_Body, frozen=True, kw_only=True):
    """POST .../deploymentslots/{slot}?comp=upgrade: a new package (and configuration), base64."""

    mode: UpgradeMode = "Auto"
    package: bytes
    configuration: bytes | None = None
    configuration_name: Name = "ServiceConfiguration.cscfg"
    label: Label = ""
    role_to_upgrade: Name | None = None


class WalkUpgradeDomain(_Body, frozen=True, kw_only=True):
    """POST .../deploymentslots/{slot}?comp=walkupgradedomain."""

    upgrade_domain: Annotated[int, msgspec.Meta(ge=0, le=19)]


class UpdateDeploymentStatus(_Body, frozen=True, kw_only=True):
    """POST .../deploymentslots/{slot}?comp=status."""

    status: Literal["Running", "Suspended"]


class Swap(_Body, frozen=True, kw_only=True):
    """POST .../hostedservices/{service} (or ?comp=swap): VIP swap. Production and
    SourceDeployment, when given, must name the deployments now in production and staging."""

    production: Name | None = None
    source_deployment: Name | None = None


# -- responses -----------------------------------------------------------------------------------


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """Base of every response body: PascalCase keys."""


class ErrorDetail(_Out, frozen=True, kw_only=True):
    """The inside of an error body."""

    code: str
    message: str


class ErrorBody(_Out, frozen=True, kw_only=True):
    """``{"Error": {"Code": ..., "Message": ...}}``."""

    error: ErrorDetail


class HostedServiceProperties(_Out, frozen=True, kw_only=True):
    """Label, description, location or affinity group, and the pool chosen at first deploy."""

    label: str
    description: str
    location: str | None
    affinity_group: str | None
    status: str = "Created"
    date_created: str
    pool: str | None = None


class HostedService(_Out, frozen=True, kw_only=True):
    """A hosted service; Deployments only with ``?embed-detail=true``."""

    service_name: str
    url: str
    hosted_service_properties: HostedServiceProperties
    deployments: list[DeploymentView] | msgspec.UnsetType = msgspec.UNSET


class HostedServices(_Out, frozen=True, kw_only=True):
    """GET .../services/hostedservices."""

    hosted_services: list[HostedService]


class Subscription(_Out, frozen=True, kw_only=True):
    """GET /subscriptions/{id}."""

    subscription_id: str
    subscription_name: str
    subscription_status: str = "Active"
    current_hosted_services: int = 0


class Subscriptions(_Out, frozen=True, kw_only=True):
    """GET /subscriptions."""

    subscriptions: list[Subscription]


class Location(_Out, frozen=True, kw_only=True):
    """A region: the pools that serve it."""

    name: str
    display_name: str
    available_services: list[str] = msgspec.field(default_factory=lambda: ["Compute"])
    pools: list[str] = []


class Locations(_Out, frozen=True, kw_only=True):
    """GET /subscriptions/{id}/locations."""

    locations: list[Location]


class Operation(_Out, frozen=True, kw_only=True):
    """GET /subscriptions/{id}/operations/{request-id}."""

    id: str
    status: Literal["InProgress", "Succeeded", "Failed"]
    http_status_code: int
    error: ErrorDetail | None = None


# -- service certificates (fabric.frontend.certificates) and remote commands (fabric.frontend.remote):
# here, not beside their handlers, which load cryptography and the guest's agents --------------------


class Certificate(_Out, frozen=True, kw_only=True):
    """One service certificate: where it is, its thumbprint, and the certificate itself (DER)."""

    certificate_url: str
    thumbprint: str
    thumbprint_algorithm: str
    data: bytes
    subject: str = ""
    issuer: str = ""
    dns_names: list[str] = []
    not_before: datetime.datetime | None = None
    not_after: datetime.datetime | None = None


class Certificates(_Out, frozen=True, kw_only=True):
    """GET .../certificates."""

    certificates: list[Certificate]


#: the most words a remote command may have
MAX_EXEC_WORDS = 256
#: the longest a remote command may run (seconds): the RemoteAccess agent's own limit
#: (fabric.guest.plugin_agents.remote_exec.MAX_TIMEOUT, checked equal by a test)
MAX_EXEC_TIMEOUT = 3600.0


class ExecRequest(_Body, frozen=True, kw_only=True):
    """The command (its words, as execvp takes them) and how long it may run (seconds)."""

    command: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_EXEC_WORDS)]
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=MAX_EXEC_TIMEOUT)] = 60.0


class ExecResult(_Out, frozen=True, kw_only=True):
    """How the command ended: its exit status (128+N when killed by signal N) and its output."""

    exit_status: int
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False
    timed_out: bool = False
