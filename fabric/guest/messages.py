"""Messages inside a VM: between the guest agent and the host bootstrapper process."""

from __future__ import annotations

from typing import Literal

import msgspec

from actors import Request
from fabric.model.definition import RoleDefinition
from fabric.model.status import RoleStatus
from fabric.settings import Settings
from roles.protocol import Change, RoleEnvironmentData


class BootstrapConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The one argument the host bootstrapper is built with.

    Attributes:
        vm_root: the VM's disk folder (see fabric.guest.disk.VmDisk).
        role: the role's definition (startup tasks, imports, runtime, sites, endpoints...).
        environment: the instance's RoleEnvironment snapshot (ports already assigned).
        vm_uid: when the fabric runs as root, the VM's own account (a uid; its group is the
            same number) that limited startup tasks, the role and its web workers run as; None
            when not root (everything runs as us, without isolation).
        state_dir: the fabric's state folder, hidden from the VM's limited processes.
        python: the interpreter for role hosts, plugin agents and IISConfigurator.
    """

    vm_root: str
    deployment_id: str
    instance_id: str
    role: RoleDefinition
    environment: RoleEnvironmentData
    settings: Settings
    vm_uid: int | None = None
    state_dir: str = ""
    python: str = ""


class InstanceStatus(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """The bootstrapper's view of its role instance, pushed to the guest agent on every change.

    Attributes:
        status: the Service Management API status.
        detail: why, in words (e.g. "startup task 'install.sh' exited with code 3; see ...").
        restarts: how many times the role host was restarted since the VM started.
        boot: this boot of the VM (each start of the bootstrapper is a new one); "" when the
            host made the status itself.
        starts: role host starts in this boot, the first included (the controller adds them
            up into an instance's restarts).
        role_pid: the role host's pid, 0 when none runs.
        at: anyio.current_time() of the change, in the bootstrapper's clock.
    """

    status: RoleStatus
    detail: str = ""
    restarts: int = 0
    boot: str = ""
    starts: int = 0
    role_pid: int = 0
    at: float = 0.0


class GetInstanceStatus(Request[InstanceStatus], frozen=True, tag=True):
    """Ask the bootstrapper for its current InstanceStatus."""


#: How a guest took a new environment: "applied" (changing not cancelled, changed raised) or
#: "recycling" (a changing handler cancelled: the role host restarts with it).
EnvironmentApplied = Literal["applied", "recycling"]


class ApplyEnvironment(Request[EnvironmentApplied], frozen=True, tag=True, kw_only=True):
    """Ask the bootstrapper to apply a new environment (configuration or topology change).

    The answer is "applied" (changing not cancelled; changed raised) or "recycling" (a
    changing handler cancelled: the role host is recycled with the new environment).
    """

    environment: RoleEnvironmentData
    changes: list[Change]


class RecycleRole(msgspec.Struct, frozen=True, tag=True):
    """Tell the bootstrapper to recycle the role host (Stopping, on_stop, restart)."""


# -- the host agent and the guest (the AppAgent, first process of the VM) --------------------------


class CertificateFile(msgspec.Struct, frozen=True, kw_only=True):
    """A certificate the instance needs, with its PEM text (placed owner-only on the VM)."""

    name: str
    thumbprint: str
    store_location: str = "LocalMachine"
    store_name: str = "My"
    pem: str = ""


class GuestConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The one argument a VM's first process (the AppAgent) is built with.

    Attributes:
        vm_root: the VM's disk folder.
        role_code_dir: the role's code on the host, copied to E/approot.
        site_dirs: for each site index, the host folder holding its files (copied to
            E/sitesroot/<index>); for each virtual application, "index/app-path" -> folder.
        vm_uid: the VM's own account when the fabric runs as root (see BootstrapConfig).
        state_dir: the fabric's state folder, hidden from the VM's limited processes.
        agent: the guest agent class the AppAgent installs ("module:Class"), so that a new
            version can replace the old one without restarting the role.
    """

    vm_root: str
    deployment_id: str
    instance_id: str
    role: RoleDefinition
    role_code_dir: str
    site_dirs: dict[str, str] = {}
    environment: RoleEnvironmentData
    settings: Settings
    certificates: list[CertificateFile] = []
    vm_uid: int | None = None
    state_dir: str = ""
    #: the hosted service whose uploaded certificates (fabric.certs) the guest agent installs
    hosted_service: str = ""
    agent: str = "fabric.guest.agent:GuestAgent"


class Heartbeat(Request["HeartbeatReply"], frozen=True, tag=True):
    """The host agent's heartbeat; the answer is a HeartbeatReply."""

    seq: int


class HeartbeatReply(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """The guest's answer: its sequence number and the instance's status now."""

    seq: int
    instance_id: str
    status: InstanceStatus
    agent_version: str = ""
    #: LocalStorage resources using more than their sizeInMB
    storage_over_quota: list[str] = []


class GuestStatus(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Pushed up to the host agent at once on every status change."""

    instance_id: str
    status: InstanceStatus


class UpdateGuestAgent(Request[str], frozen=True, tag=True):
    """Replace the guest agent with another version ("module:Class"), leaving the role running."""

    agent: str
