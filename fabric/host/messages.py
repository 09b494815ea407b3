"""Messages between the fabric controller and a host agent process."""

from __future__ import annotations

from typing import Literal

import msgspec

from actors import Request, register_error
from fabric.guest.messages import ApplyEnvironment, EnvironmentApplied, GuestConfig, InstanceStatus
from fabric.settings import Settings


class HostConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The one argument a host agent process is built with."""

    host_id: str
    cores: int
    #: the fabric's state folder; VMs live in <state_dir>/vms/<instance>
    state_dir: str
    settings: Settings
    #: the fault domain the host sits in (its rack)
    fault_domain: int = 0


# -- controller -> host (asks) ------------------------------------------------------------------


class StartGuest(Request[int], frozen=True, tag=True):
    """Boot a VM for this instance (CreatingVM, StartingVM, then the guest's own statuses).
    Answers once the VM's first process runs; the role's progress arrives as pushes."""

    config: GuestConfig


class StopGuest(Request[None], frozen=True, tag=True, kw_only=True):
    """Stop a VM gracefully (StoppingRole, on_stop, StoppingVM, StoppedVM); answers when it is
    gone. ``delete_disk`` removes its folder too."""

    instance_id: str
    delete_disk: bool = False


class RestartGuest(Request[int], frozen=True, tag=True, kw_only=True):
    """Restart the guest OS (reboot); with ``reimage`` the VM gets a fresh disk first."""

    instance_id: str
    reimage: bool = False
    #: a new configuration to boot with (an upgrade); None keeps the current one
    config: GuestConfig | None = None


class ApplyGuestEnvironment(Request[EnvironmentApplied], frozen=True, tag=True, kw_only=True):
    """Forward a configuration or topology change to one instance; answers "applied" or
    "recycling" (see fabric.guest.messages.ApplyEnvironment)."""

    instance_id: str
    change: ApplyEnvironment


class GetHostStatus(Request["HostHeartbeat"], frozen=True, tag=True):
    """Ask for a HostHeartbeat now."""


#: Which way a link fault acts: "out" towards the VM, "in" from it (as actors.LinkFaults).
Direction = Literal["out", "in", "both"]
GuestLinkAction = Literal["drop", "delay", "cut", "clear"]


class GuestLinkFault(Request["GuestLinkApplied"], frozen=True, tag=True, kw_only=True):
    """Chaos: drop, delay or cut the link to one VM, or clear it."""

    instance_id: str
    action: GuestLinkAction
    direction: Direction = "both"
    probability: float = 0.0
    seconds: float = 0.0
    jitter: float = 0.0
    seed: int | None = None  # of the drop and jitter draws (see LinkFaults.reseed)


class GuestLinkApplied(msgspec.Struct, frozen=True, kw_only=True):
    """The host agent's answer to a GuestLinkFault: the VM's pid (0 when it is down)."""

    instance_id: str
    pid: int


@register_error()
class GuestLinkUnavailable(RuntimeError):
    """The VM named by a GuestLinkFault does not run on this host now (registered: the
    controller tells this refusal apart from a bug across the host's link)."""


# -- host -> controller (tells to the parent) ----------------------------------------------------


class InstanceStatusChanged(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Pushed at once when an instance's status changes (so rotation follows in milliseconds)."""

    host_id: str
    instance_id: str
    status: InstanceStatus


class HostHeartbeat(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Sent every host_heartbeat_interval: the host is alive, and every instance's status
    (so that silence, not only change, is noticed)."""

    host_id: str
    instances: dict[str, InstanceStatus]
    pid: int = 0
