"""The messages between the host bootstrapper (fabric/guest) and a role host process (roles/hosts).

The bootstrapper spawns a role host as a process actor (``roles.hosts.worker:WorkerHost``,
``roles.hosts.iis:IISHost``, ``roles.hosts.hwc:WebHost`` or ``roles.hosts.w3wp:WebWorker``)
with one ``RoleHostConfig`` argument and itself as the parent. The role host tells its parent
about every state change (``RoleHostState``) and answers the bootstrapper's asks. The module
lives in roles/ because roles/ is the lower layer: fabric/ imports it, never the reverse.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from actors import Request

# The role's view of the world lives in roles.environment_data, which `import roles` loads
# without the actor runtime; these names stay importable from here.
from roles.environment_data import CertificateInfo as CertificateInfo
from roles.environment_data import Change as Change
from roles.environment_data import EndpointInfo as EndpointInfo
from roles.environment_data import InstanceInfo as InstanceInfo
from roles.environment_data import LocalResourceInfo as LocalResourceInfo
from roles.environment_data import RoleEnvironmentData as RoleEnvironmentData

# -- what a role host runs ------------------------------------------------------------------------


class SiteBinding(msgspec.Struct, frozen=True, kw_only=True):
    """A site binding: the endpoint it listens on and the host header it answers (empty: any)."""

    name: str
    endpoint_name: str
    host_header: str = ""


class SiteInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A site of a web role as laid out on the VM disk (E/sitesroot/<index>)."""

    name: str
    index: int
    physical_path: str
    bindings: list[SiteBinding] = []
    #: path prefix -> folder, for VirtualApplication elements
    virtual_applications: dict[str, str] = {}


class RoleHostConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The one argument a role host is built with."""

    kind: Literal["worker", "iis", "hwc", "w3wp"]
    #: the role's code (E/approot): put first on sys.path
    app_root: str
    #: the module (file name in app_root, e.g. "worker.py") the definition names, or "" to search
    entry_module: str = ""
    #: a ProgramEntryPoint command line; when set, it is run instead of a RoleEntryPoint
    program: str = ""
    set_ready_on_process_start: bool = True
    environment: RoleEnvironmentData
    #: where the host writes its own log (WaIISHost.log, WaWebHost.log, ...), "" for none
    log_path: str = ""
    on_stop_timeout: float = 300.0
    #: for hwc and w3wp: the sites to serve and, for w3wp, the inherited listening fds by endpoint
    sites: list[SiteInfo] = []
    listen_fds: dict[str, int] = {}
    #: for hwc and w3wp: the W3SVC log folder (DiagnosticStore/LogFiles/W3SVC1)
    web_log_dir: str = ""
    #: a w3wp worker exits by itself after this long without a request
    idle_timeout: float = 1200.0
    #: a fault injected by chaos into this start: "" (none), "fail" (on_start raises) or
    #: "slow:<seconds>" (on_start is held that long first)
    chaos_on_start: str = ""
    #: for hwc and w3wp: after a stop, how long requests in flight may take to finish
    graceful_timeout: float = 10.0


# -- bootstrapper -> role host (asks) -------------------------------------------------------------


class StatusCheck(Request["StatusCheckResult"], frozen=True, tag=True):
    """Raise RoleEnvironment.status_check; the answer is a StatusCheckResult."""


class StatusCheckResult(msgspec.Struct, frozen=True, tag=True):
    """Whether a status_check handler called set_busy()."""

    busy: bool


class EnvironmentChanging(Request["ChangingResult"], frozen=True, tag=True, kw_only=True):
    """Raise RoleEnvironment.changing; the answer is a ChangingResult."""

    changes: list[Change]


class ChangingResult(msgspec.Struct, frozen=True, tag=True):
    """True when a changing handler cancelled: the instance recycles to apply the change."""

    cancel: bool


class EnvironmentChanged(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """The new environment is in force: update RoleEnvironment, then raise changed."""

    environment: RoleEnvironmentData
    changes: list[Change]


class SimultaneousChanging(Request[None], frozen=True, tag=True, kw_only=True):
    """Blast topology discovery: raise simultaneous_changing (no cancel, no recycle)."""

    changes: list[Change]


class SimultaneousChanged(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Blast topology discovery: the new topology is in force; raise simultaneous_changed."""

    environment: RoleEnvironmentData
    changes: list[Change]


# -- role host -> bootstrapper (tells to the parent) ----------------------------------------------

RoleHostPhase = Literal[
    "starting",  # loading the entry point, running on_start
    "ready",  # on_start returned True; run is running
    "recycling",  # run returned or request_recycle(): the host is stopping to be restarted
    "failed",  # on_start returned False or raised, or run/on_stop raised: the process ends
    "stopping",  # the stopping event and on_stop are running
]


class RoleHostState(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A role host's phase changed; ``detail`` says why (an error's type and message)."""

    phase: RoleHostPhase
    detail: str = ""
    pid: int = 0


class WebActivity(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A web worker served requests (for idle accounting and the instance's diagnostics)."""

    requests: int
