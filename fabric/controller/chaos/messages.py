"""What crosses a boundary in chaos: fault specs, fault records, target maps and watch events.

The same Structs travel as JSON through the API (``/chaos/...``), inside the fabric from FFE to
the controller's chaos agent, and into a run's journal. Times named ``at``/``t``/``now`` are the
fabric's clock (anyio.current_time() in the fabric's process): compare them with each other only.
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

import msgspec

from actors import Request
from fabric.host.messages import Direction
from fabric.network.toxics import Toxic

#: The answer type of a chaos request.
Answer = TypeVar("Answer")


class ChaosCommand(Request[Answer], Generic[Answer], frozen=True):
    """The envelope FFE forwards to a fabric controller for its chaos agent: one of the
    requests below."""

    request: Request[Answer]


Slot = Literal["production", "staging"]

#: A process by its place in the tree. ``guest-agent`` and ``app-agent`` name the same process,
#: the VM's first one (the AppAgent hosts the GuestAgent so that it can replace it in place).
Place = Literal["role-host", "web-worker", "bootstrapper", "guest-agent", "app-agent", "host-agent", "host"]
PLACES: tuple[str, ...] = (
    "role-host",
    "web-worker",
    "bootstrapper",
    "guest-agent",
    "app-agent",
    "host-agent",
    "host",
)
#: Which actor link: ``host`` is the controller <-> host agent link, ``guest`` the host agent <-> VM.
Link = Literal["host", "guest"]
FaultState = Literal["active", "done", "undone", "failed"]
#: A fault's times are bounded like every number a request carries: none negative, a day at most.
Seconds = Annotated[float, msgspec.Meta(ge=0, le=86_400)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class Target(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a fault lands, found in the live deployment when it is injected.

    Attributes:
        service: the hosted service (default: the pool's only deployment).
        slot: the deployment slot.
        place: the process, for process faults (kill, crash, hang).
        instance: an instance id (``Web_IN_0``) or VM name.
        role: with ``random``, any instance of this role.
        host: a host id (``local-host1``); for a host place or the host link, the host of
            ``instance`` when not given.
        endpoint: ``Role/Endpoint`` of a load-balanced input endpoint (toxics).
        random: pick one matching instance at random (seeded by ``seed``).
        seed: the seed of that pick (None: any).
    """

    service: str | None = None
    slot: Slot = "production"
    place: Place | None = None
    instance: str | None = None
    role: str | None = None
    host: str | None = None
    endpoint: str | None = None
    random: bool = False
    seed: int | None = None

    def label(self) -> str:
        """A short human name: ``role-host@Web_IN_0``, ``host@local-host1``, ``Web/HttpIn``."""
        where = self.instance or self.host or self.endpoint or (f"random {self.role}" if self.role else "")
        if self.place is not None:
            return f"{self.place}@{where}" if where else self.place
        return where or "deployment"


# -- faults (a tagged union: {"type": "kill", "target": {...}, ...}) ----------------------------------


class _Fault(msgspec.Struct, frozen=True, kw_only=True, tag=True, forbid_unknown_fields=True):
    target: Target


class Kill(_Fault, frozen=True, kw_only=True, tag="kill"):
    """SIGKILL the process at ``target.place`` (a whole host: every process group under it)."""


class Crash(_Fault, frozen=True, kw_only=True, tag="crash"):
    """SIGABRT the process at ``target.place``, as a fatal internal error would (no core file)."""


class Hang(_Fault, frozen=True, kw_only=True, tag="hang"):
    """SIGSTOP the process (a host: all of its processes); SIGCONT after ``duration`` or on undo."""

    duration: Seconds | None = None


class LinkFault(_Fault, frozen=True, kw_only=True, tag="link"):
    """Drop, delay (with jitter) or cut the messages on an actor link.

    ``link="host"``: the controller's link to the host of ``target`` ("out": towards the host);
    ``link="guest"``: the host agent's link to the VM of ``target.instance`` ("out": towards it).
    A guest link fault lasts for the VM's current boot: a rebooted VM gets a fresh link.
    """

    link: Link = "host"
    drop: Fraction = 0.0
    delay: Seconds = 0.0
    jitter: Seconds = 0.0
    cut: bool = False
    direction: Direction = "both"
    duration: Seconds | None = None
    #: seeds which frames are dropped and the jitter drawn (None: unseeded); a scenario's
    #: schedule derives it from the run's seed
    seed: int | None = None


class Partition(_Fault, frozen=True, kw_only=True, tag="partition"):
    """Cut a link both ways for ``duration`` (a host: the controller no longer hears it)."""

    link: Link = "host"
    duration: Seconds | None = None


class ToxicFault(_Fault, frozen=True, kw_only=True, tag="toxic"):
    """A toxiproxy-style toxic on the load balancer of ``target.endpoint``."""

    toxic: Toxic
    duration: Seconds | None = None


class StartupFault(_Fault, frozen=True, kw_only=True, tag="startup"):
    """Make the next role start misbehave: write ``C/Config/Chaos.json`` on the VM's disk, then
    trigger that start.

    ``trigger``: "kill" kills the role host (on_start runs again), "reboot" reboots the VM
    (startup tasks run again), "none" waits for a start to happen; "auto" reboots when a startup
    task is to misbehave, else kills the role host. The directive is consumed once; undoing it
    removes it if still unread, and reboots the instance if it is not up.
    """

    startup_task: Literal["fail", "hang"] | None = None
    on_start: Literal["fail", "slow"] | None = None
    seconds: Seconds = 10.0
    trigger: Literal["auto", "kill", "reboot", "none"] = "auto"
    duration: Seconds | None = None


class FillStorage(_Fault, frozen=True, kw_only=True, tag="fill"):
    """Write a file past a LocalStorage resource's sizeInMB (by ``extra_mb``); undo removes it."""

    storage: str | None = None
    extra_mb: Annotated[int, msgspec.Meta(ge=1, le=1_048_576)] = 1
    duration: Seconds | None = None


class ConfigStorm(_Fault, frozen=True, kw_only=True, tag="storm"):
    """``count`` ChangeConfiguration in a row, toggling one setting of ``target.role``; the setting
    ends at its first value (undo restores it when the storm is cut short)."""

    setting: str | None = None
    count: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    interval: Seconds = 0.0


class NetworkFault(_Fault, frozen=True, kw_only=True, tag="net"):
    """A real network fault on a joined host's machine (fabric.host.net_faults): a partition,
    ``loss`` percent of packets each way, ``bandwidth`` bits/s on egress, or ``delay`` (+ ``jitter``)
    seconds. Exactly one; the host undoes it itself after ``duration`` (required: a partition
    cuts the controller off)."""

    partition: bool = False
    loss: Annotated[float, msgspec.Meta(ge=0, le=100)] = 0.0
    bandwidth: Annotated[int, msgspec.Meta(ge=0, le=10**12)] = 0
    delay: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.0
    duration: Seconds | None = None


Fault = (
    Kill
    | Crash
    | Hang
    | LinkFault
    | Partition
    | ToxicFault
    | StartupFault
    | FillStorage
    | ConfigStorm
    | NetworkFault
)
"""Any fault (a tagged union on ``type``)."""


def fault_kind(fault: Fault) -> str:
    """The fault's tag: kill, crash, hang, link, partition, toxic, startup, fill, storm or net."""
    return str(type(fault).__struct_config__.tag)


def fault_duration(fault: Fault) -> float | None:
    """How long a lasting fault lasts (None: until undone, or not a lasting fault)."""
    return getattr(fault, "duration", None)


def with_duration(fault: Fault, duration: float | None) -> Fault:
    """The same fault lasting ``duration`` (faults that do not last are returned as they are)."""
    if "duration" not in fault.__struct_fields__:
        return fault
    return msgspec.structs.replace(fault, duration=duration)


# -- requests to the chaos agent ----------------------------------------------------------------------


class Inject(Request["FaultRecord"], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Apply one fault now; answers its FaultRecord."""

    fault: Fault
    #: a name for the record (a scenario's method entry), shown in reports
    label: str = ""


class Undo(Request["FaultList | FaultRecord"], frozen=True, kw_only=True):
    """Undo one lasting fault (``id``) or every active one (None); answers the records undone."""

    id: str | None = None


class ListFaults(Request["FaultList"], frozen=True):
    """Answer every fault record (active first, then the most recent ones)."""


class GetTargets(Request["TargetMap"], frozen=True, kw_only=True):
    """Answer the TargetMap of a deployment (default: the pool's only one)."""

    service: str | None = None
    slot: Slot = "production"


class WatchStart(Request["WatchBatch"], frozen=True, kw_only=True):
    """Record every change of a deployment's instances (status, host, rotation) from now on.

    The watch ends by itself when not polled for ``lease`` seconds; answers a WatchBatch.
    """

    service: str | None = None
    slot: Slot = "production"
    lease: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0


class WatchPoll(Request["WatchBatch"], frozen=True, kw_only=True):
    """Answer the watch's events from number ``since`` on (and renew its lease)."""

    id: str
    since: int = 0


class WatchStop(Request["WatchBatch"], frozen=True, kw_only=True):
    """End a watch; answers its last WatchBatch."""

    id: str
    since: int = 0


# -- answers -------------------------------------------------------------------------------------------


class Hit(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a fault hit: a process, a link, an endpoint, a file or a deployment."""

    what: Literal["process", "link", "endpoint", "file", "deployment"]
    name: str
    pid: int = 0
    #: the process's start time (psutil create_time): a pid is only "the same" with it
    started: float = 0.0
    instance: str = ""
    host: str = ""
    detail: str = ""


class FaultRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a fault hit and when (fabric clock), and whether it is still in force."""

    id: str
    kind: str
    label: str
    target: str
    instances: list[str] = []
    hits: list[Hit] = []
    at: float
    wall: str
    state: FaultState
    until: float | None = None
    undone_at: float | None = None
    detail: str = ""


class FaultList(msgspec.Struct, frozen=True, kw_only=True):
    """A list of fault records."""

    faults: list[FaultRecord]


class ProcessView(msgspec.Struct, frozen=True, kw_only=True):
    """One process of the fabric's tree, as chaos sees it."""

    pid: int
    ppid: int
    pgid: int
    name: str
    started: float
    place: str = ""
    instance: str = ""
    host: str = ""


class InstanceTargets(msgspec.Struct, frozen=True, kw_only=True):
    """One instance: its status, host, rotation and processes (place -> pid)."""

    id: str
    vm: str
    role: str
    status: str
    host: str
    #: in the rotation of its role's load-balanced endpoints (None: the role has none)
    rotation: bool | None = None
    processes: dict[str, int] = {}


class HostTargets(msgspec.Struct, frozen=True, kw_only=True):
    """One host of the pool."""

    id: str
    pid: int
    alive: bool
    instances: list[str] = []


class EndpointTargets(msgspec.Struct, frozen=True, kw_only=True):
    """One load-balanced input endpoint."""

    name: str
    protocol: str
    host: str
    port: int
    rotation: list[str] = []
    toxics: list[str] = []


class TargetMap(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a fault can hit in one deployment, now."""

    pool: str
    service: str
    slot: Slot
    deployment_id: str
    now: float
    instances: list[InstanceTargets] = []
    hosts: list[HostTargets] = []
    endpoints: list[EndpointTargets] = []
    processes: list[ProcessView] = []
    fabric_pid: int = 0


class WatchEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An instance's observed state at time ``t``, recorded when any part of it changed."""

    t: float
    instance: str
    status: str
    host: str
    rotation: bool | None = None


class WatchBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A watch's events from ``first`` on; poll again with ``since=next``."""

    id: str
    now: float
    first: int
    next: int
    events: list[WatchEvent] = []
    active: bool = True
