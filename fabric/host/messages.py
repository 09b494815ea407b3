"""Messages between the fabric controller and a host agent process."""

from __future__ import annotations

from typing import Annotated, Literal

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
    #: the first and last uid its VMs' accounts are drawn from (None: the whole VM range, see
    #: fabric.guest.account); the host chooses among them (fabric.host.accounts)
    uids: tuple[int, int] | None = None
    #: the fabric's isolation table its VMs' ports are entered in ("" none: fabric.network.isolation)
    firewall: str = ""


# -- controller -> host (asks) ------------------------------------------------------------------


class StartGuest(Request[int], frozen=True, tag=True):
    """Boot a VM for this instance (CreatingVM, StartingVM, then the guest's own statuses).
    Answers once the VM's first process runs; the role's progress arrives as pushes."""

    config: GuestConfig
    #: a joined host: the digest of the package shipped for it (see fabric.host.packages)
    package: str = ""


#: Most instances one StartGuests carries (a host holds at most one per core)
MAX_START_BATCH = 256


class StartOutcome(msgspec.Struct, frozen=True):
    """One instance's answer in a StartGuests: its VM's pid, or why it did not boot."""

    pid: int = 0
    #: "" booted; else the error's type name and message, as an ask would have raised them
    error_type: str = ""
    error: str = ""


class StartedGuests(msgspec.Struct, frozen=True, tag=True):
    """The answer to a StartGuests: an outcome per config, in order."""

    outcomes: list[StartOutcome]


class StartGuests(Request[StartedGuests], frozen=True, tag=True):
    """StartGuest for several instances of one host at once (one round trip for a deployment
    step's instances there); answers an outcome per config, in order: one failing does not fail
    the others. A host answers this for local hosts only (a joined host is asked per instance)."""

    configs: Annotated[list[GuestConfig], msgspec.Meta(max_length=MAX_START_BATCH)]


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
    #: a joined host: the digest of the package shipped for ``config``
    package: str = ""


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
    #: a joined host: the key the controller gave it over its own link (see ReportKey)
    key: str = ""
    #: the uid the host chose for the VM's account (0: none, the host is not root)
    uid: int = 0


#: status changes one InstanceStatusesChanged carries at most
MAX_STATUS_BATCH = 1024


class StatusChange(msgspec.Struct, frozen=True, kw_only=True):
    """One change of an InstanceStatusesChanged (as an InstanceStatusChanged says it)."""

    instance_id: str
    status: InstanceStatus
    uid: int = 0


class InstanceStatusesChanged(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Several status changes of one host's instances, oldest first: the steps of a boot that
    the host held back a moment to send together (fabric.host.reports). The controller takes
    them one by one, as InstanceStatusChanged each."""

    host_id: str
    changes: Annotated[list[StatusChange], msgspec.Meta(max_length=MAX_STATUS_BATCH)]
    #: a joined host: the key the controller gave it over its own link (see ReportKey)
    key: str = ""


class HostHeartbeat(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Sent every host_heartbeat_interval: the host is alive, and every instance's status
    (so that silence, not only change, is noticed)."""

    host_id: str
    instances: dict[str, InstanceStatus]
    pid: int = 0
    #: a joined host describes itself too: the address its instances listen on, its cores,
    #: fault domain and memory, and its agent's incarnation (new at each start)
    address: str = ""
    cores: int = 0
    fault_domain: int = 0
    memory_mb: int = 0
    boot: str = ""
    #: a joined host: the key the controller gave it over its own link (see ReportKey)
    key: str = ""


# -- controller -> a joined host (fabric.host.remote) ----------------------------------------------

#: endpoints one instance may have at most (every number a request carries is bounded)
MAX_ENDPOINTS = 256
#: bytes one package chunk carries at most (a link's frames are bounded)
MAX_CHUNK = 1024 * 1024


class ChoosePorts(Request[dict[str, int]], frozen=True, tag=True, kw_only=True):
    """Ask a joined host for an instance's local ports on its address: it keeps each proposed
    one when it can bind it there and no other instance of its holds it, else it picks one
    (from the endpoint's fixed ports when it has some)."""

    instance_id: str
    #: endpoint name -> the port the controller proposes
    proposed: dict[str, int]
    #: endpoint name -> "tcp" or "udp"
    protocols: dict[str, str] = {}
    #: endpoint name -> its FixedPort/FixedPortRange spans (inclusive)
    fixed: dict[str, list[tuple[int, int]]] = {}


class HasPackage(Request[bool], frozen=True, tag=True):
    """Whether a joined host holds the package of this digest already."""

    digest: str


class PackageChunk(Request[int], frozen=True, tag=True, kw_only=True):
    """A piece of a package for a joined host, in order; answers the bytes held so far."""

    digest: str
    offset: int
    total: int
    data: bytes


class GetHostSettings(Request[Settings], frozen=True, tag=True):
    """A joined host asks the controller for the settings its agent and guests run with."""


#: bytes one log read answers at most
MAX_LOG_READ = 1024 * 1024


class GuestLog(msgspec.Struct, frozen=True, kw_only=True):
    """A joined host's answer to ReadGuestLog: the VM's logs (short name -> size in bytes) and,
    when one was named, its bytes from the offset asked (at most the limit)."""

    logs: dict[str, int]
    data: bytes = b""
    #: the named log's size now (a size below the offset read: it started again)
    size: int = 0
    #: each listed log's path in the VM folder (short name -> relative path; older hosts: none)
    paths: dict[str, str] = {}


class ReadGuestLog(Request[GuestLog], frozen=True, tag=True, kw_only=True):
    """`fabric logs` on a joined host: list a VM's logs, or read one from ``offset``."""

    instance_id: str
    #: a short name as `fabric logs --list` shows them ("": list only)
    which: str = ""
    offset: int = 0
    limit: int = 256 * 1024


class CertificateCopy(msgspec.Struct, frozen=True, kw_only=True):
    """A hosted service's certificate for a joined host: the chain and its private key, PEM."""

    certificate_pem: str
    key_pem: bytes


class PutCertificates(Request[int], frozen=True, tag=True, kw_only=True):
    """Keep a hosted service's certificates in a joined host's own store (its VMs install them
    from there, as on the controller's machine); answers how many it keeps. At most 100."""

    service: str
    certificates: list[CertificateCopy]


class ReportKey(msgspec.Struct, frozen=True, tag=True):
    """The controller to a joined host, over that host's own link: carry this key in every
    report. The controller's reports actor is reachable from every linked host and cannot tell
    who sent a message; a report with the wrong key is dropped, so no host can report for
    another (the key never travels on any other host's link)."""

    key: str


#: the largest exec request (a command line and its JSON) and answer (two streams, base64) a
#: joined host relays
MAX_EXEC_REQUEST = 128 * 1024
MAX_EXEC_ANSWER = 4 * 1024 * 1024


class ExecInVm(Request[bytes], frozen=True, tag=True, kw_only=True):
    """`fabric exec` on a joined host: hand one JSON request line to the VM's RemoteAccess agent
    and answer its one JSON answer line (the same protocol as on the controller's machine)."""

    instance_id: str
    line: bytes
    timeout: float


#: the most processes one chaos signal on a joined host reaches or resumes
MAX_SIGNALLED = 64


class VmProcess(msgspec.Struct, frozen=True, kw_only=True):
    """A process of a VM as a joined host found and signalled it (its pid on that machine)."""

    pid: int
    pgid: int
    name: str
    started: float
    place: str


#: the longest a joined host keeps processes stopped by itself (a day)
MAX_HANG = 86_400.0


class SignalVm(Request[list[VmProcess]], frozen=True, tag=True, kw_only=True):
    """Chaos on a joined host: kill, crash (SIGABRT) or stop the VM's processes at ``place``, or
    resume ``processes`` (pid, start time) stopped before; answers those reached (at most 64).

    ``duration`` (stop, and hold: for ``processes`` again): the host resumes them by itself that
    many seconds from now, whether or not the controller can still reach it (0: only when asked).
    """

    instance_id: str
    place: Literal["vm", "bootstrapper", "role-host", "web-worker"] = "role-host"
    action: Literal["kill", "crash", "stop", "resume", "hold"]
    processes: list[tuple[int, float]] = []
    duration: Annotated[float, msgspec.Meta(ge=0, le=MAX_HANG)] = 0.0


class HostProcess(msgspec.Struct, frozen=True, kw_only=True):
    """A process of a joined host's own tree (its pid on that machine; ``instance``: the VM name)."""

    pid: int
    ppid: int
    pgid: int
    name: str
    started: float
    place: str
    instance: str = ""


class ListProcesses(Request[list[HostProcess]], frozen=True, tag=True):
    """Chaos targets on a joined host: its agent's process, then every process under it (at most
    MAX_LISTED)."""


#: the most processes one ListProcesses answer carries
MAX_LISTED = 4096


class SignalHost(Request[list[HostProcess]], frozen=True, tag=True, kw_only=True):
    """Chaos on a joined host's own processes: its agent (``host-agent``: the `fabric host join`
    process) or it and every process under it (``host``). Answered first, done half a second
    later (the answer goes back on the link it stops). A stop lasts ``duration`` seconds and is
    ended by the host itself (a process of its own session): a stopped agent cannot be reached."""

    place: Literal["host", "host-agent"]
    action: Literal["kill", "crash", "stop"]
    duration: Annotated[float, msgspec.Meta(ge=0, le=MAX_HANG)] = 0.0
    #: a stop: its id, which the host's backstop asks the controller's join port about (an undo
    #: before the end resumes the host then); "": it waits for the end
    id: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]{0,32}$")] = ""


#: the most bytes one relayed shell step carries either way, and open shells per joined host
MAX_SHELL_CHUNK = 64 * 1024
MAX_SHELLS = 16


class ShellChunk(msgspec.Struct, frozen=True, kw_only=True):
    """What a relayed shell's agent sent since the last read ("" after ``wait``); ``eof``: it
    closed (the shell ended)."""

    data: bytes = b""
    eof: bool = False


class ShellStep(Request[ShellChunk], frozen=True, tag=True, kw_only=True):
    """`fabric shell` on a joined host, one step of the byte stream to the VM's RemoteAccess
    agent: ``open`` connects and sends ``data`` (the request line; answers the session id in
    ``data``), ``send`` writes, ``read`` waits up to ``wait`` s for output, ``eof`` half-closes,
    ``close`` ends the session. The shell protocol's frames pass through untouched."""

    instance_id: str
    op: Literal["open", "send", "read", "eof", "close"]
    session: str = ""
    data: bytes = b""
    wait: float = 0.0
