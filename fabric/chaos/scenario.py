"""Chaos scenarios: a TOML file modelled on a Chaos Toolkit experiment.

A steady-state hypothesis (probes with tolerances, checked before, during and after), a method
(faults at given times, or drawn at random with a rate and a target filter) and rollbacks::

    title = "Random role kills"
    duration = 20                      # seconds of method

    [service]                          # what `--service` deploys; its hosted service and slot
    path = "../guestbook"

    [settings]                         # the embedded fabric's settings (fast profile + these)
    profile = "fast"

    [load]                             # HTTP load through the load balancer, 127.0.0.1 only
    endpoint = "Web/HttpIn"
    rate = 20

    [steady_state]
    [[steady_state.probes]]
    type = "http-success-rate"
    tolerance = { min = 0.99 }

    [[method]]
    fault = "kill"
    target = "role-host"
    roles = ["Web", "Worker"]
    every = 2.0

The README's "Scenarios" section (under "Chaos") lists every key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from fabric.settings import Settings

Phase = Literal["before", "during", "after"]
PHASES: tuple[Phase, ...] = ("before", "during", "after")
FaultName = Literal[
    "kill", "crash", "hang", "link", "partition", "toxic", "startup", "fill", "storm", "net",
    "replica-kill", "replica-hang", "database-restart",
]  # fmt: skip
ProbeType = Literal["http-success-rate", "latency", "instances-ready"]


#: a replica a control-plane fault names (fabric.replica.run.NAME_PATTERN)
REPLICA = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class ScenarioError(ValueError):
    """A scenario file is wrong; the message names the file, the key and what to change."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ServiceSection(_Section, frozen=True, kw_only=True):
    """The service a scenario runs against."""

    #: a service folder or .cspkg, relative to the scenario file (what `--service` deploys)
    path: str | None = None
    #: its configuration (.cscfg or TOML), relative to the scenario file
    config: str | None = None
    #: the hosted service (default: the fabric's only deployment)
    name: str | None = None
    slot: Literal["production", "staging"] = "production"


class LoadSection(_Section, frozen=True, kw_only=True):
    """The HTTP load sent through the load balancer while the scenario runs."""

    #: ``Role/Endpoint`` (default: the first http load-balanced endpoint)
    endpoint: str | None = None
    path: str = "/"
    rate: float = 20.0
    concurrency: int = 4
    timeout: float = 5.0


class Tolerance(_Section, frozen=True, kw_only=True):
    """The range a probe's value must fall in."""

    min: float | None = None
    max: float | None = None

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` is in range (no value never holds)."""
        if value is None:
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def text(self) -> str:
        """``>= 0.99``, ``<= 0.5`` or ``0.1..0.5``."""
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        if self.min is not None:
            return f">= {self.min:g}"
        if self.max is not None:
            return f"<= {self.max:g}"
        return "any"


class Probe(_Section, frozen=True, kw_only=True):
    """One steady-state probe.

    ``http-success-rate``: the share of load-balanced requests that succeeded;
    ``latency``: the ``percentile`` of successful requests' latency, in seconds;
    ``instances-ready``: how many instances are ReadyRole (default tolerance: all of them).
    ``phases`` says when it is judged (default: every phase; instances-ready: before and after).
    """

    type: ProbeType
    name: str = ""
    percentile: float = 99.0
    tolerance: Tolerance = Tolerance()
    phases: list[Phase] | None = None

    def judged(self) -> list[Phase]:
        """The phases whose value must be within tolerance."""
        if self.phases is not None:
            return list(self.phases)
        return ["before", "after"] if self.type == "instances-ready" else ["before", "during", "after"]

    def title(self) -> str:
        """Its name, or one made from its type."""
        if self.name:
            return self.name
        return f"latency p{self.percentile:g}" if self.type == "latency" else self.type


def default_probes() -> list[Probe]:
    """Without probes: 99% of requests succeed, and every instance is Ready before and after."""
    return [Probe(type="http-success-rate", tolerance=Tolerance(min=0.99)), Probe(type="instances-ready")]


class SteadyState(_Section, frozen=True, kw_only=True):
    """The steady-state hypothesis."""

    title: str = "the service stays available"
    #: seconds of load measured before the method, and after recovery
    before: float = 3.0
    after: float = 3.0
    #: after the rollbacks, how long instances may take to be Ready again
    recovery_timeout: float = 60.0
    probes: list[Probe] = msgspec.field(default_factory=default_probes)


class LinkParams(_Section, frozen=True, kw_only=True):
    """A link fault's parameters."""

    drop: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    cut: bool = False
    direction: Literal["out", "in", "both"] = "both"


class NetParams(_Section, frozen=True, kw_only=True):
    """A network fault's parameters, as `fabric chaos net` takes them: exactly one of a
    partition, ``loss = "5%"``, ``bandwidth = "1mbit"`` or ``delay = "100ms"`` (+ ``jitter``)."""

    partition: bool = False
    loss: str | float | None = None
    bandwidth: str | int | None = None
    delay: str | float | None = None
    jitter: str | float | None = None


class StartupParams(_Section, frozen=True, kw_only=True):
    """A startup fault's parameters."""

    startup_task: Literal["fail", "hang"] | None = None
    on_start: Literal["fail", "slow"] | None = None
    seconds: float = 10.0
    trigger: Literal["auto", "kill", "reboot", "none"] = "auto"


class StormParams(_Section, frozen=True, kw_only=True):
    """A configuration storm's parameters."""

    setting: str | None = None
    count: int = 5
    interval: float = 0.0


class DatabaseParams(_Section, frozen=True, kw_only=True):
    """A database restart's commands (run by the runner, as `fabric chaos database` does)."""

    stop_command: str = ""
    start_command: str = ""


class MethodEntry(_Section, frozen=True, kw_only=True):
    """One line of the method: a fault, where it lands, and when."""

    fault: FaultName
    name: str = ""
    #: the process (kill, crash, hang: role-host, web-worker, bootstrapper, guest-agent,
    #: app-agent, host-agent, host) or the link (link, partition: host or guest)
    target: str | None = None
    instance: str | None = None
    role: str | None = None
    roles: list[str] = []
    host: str | None = None
    endpoint: str | None = None
    #: when: at given times, or every N s, or at a random rate per second, from start to stop
    at: float | list[float] | None = None
    every: float | None = None
    rate: float | None = None
    start: float = 0.0
    stop: float | None = None
    jitter: float = 0.0
    #: how long a lasting fault lasts (default: to the end of the method)
    duration: float | None = None
    link: LinkParams = LinkParams()
    net: NetParams = NetParams()
    toxic: dict[str, Any] | None = None
    startup: StartupParams = StartupParams()
    storage: str | None = None
    extra_mb: int = 1
    storm: StormParams = StormParams()
    #: replica-kill, replica-hang: leader, follower, or a replica's name (fabric.chaos.control)
    replica: str = "leader"
    database: DatabaseParams = DatabaseParams()


class Rollback(_Section, frozen=True, kw_only=True):
    """An action run after the method, after every lasting fault was undone."""

    action: Literal["undo", "reboot"]
    instance: str | None = None


class Scenario(_Section, frozen=True, kw_only=True):
    """A whole scenario file."""

    title: str
    description: str = ""
    duration: float = 20.0
    service: ServiceSection = ServiceSection()
    settings: dict[str, Any] = {}
    load: LoadSection = LoadSection()
    steady_state: SteadyState = SteadyState()
    method: list[MethodEntry] = []
    rollbacks: list[Rollback] = []


def parse_scenario(data: str, file: str = "scenario.toml") -> Scenario:
    """A scenario from TOML text.

    Raises:
        ScenarioError: not TOML, an unknown key, a bad value, or a method line that cannot work.
    """
    try:
        raw = tomllib.loads(data)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{file}: not valid TOML: {exc}") from None
    try:
        scenario = msgspec.convert(raw, Scenario)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{file}: {exc}") from None
    _check(scenario, file)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file.

    Raises:
        ScenarioError: missing, unreadable or invalid.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read it: {exc}") from None
    return parse_scenario(text, str(path))


def _check(s: Scenario, file: str) -> None:
    from fabric.controller.chaos.messages import PLACES

    if s.duration <= 0:
        raise ScenarioError(f"{file}: duration must be > 0 seconds")
    for i, m in enumerate(s.method, 1):
        where = f"{file}: method line {i} ({m.name or m.fault})"
        if m.fault in ("kill", "crash", "hang") and m.target not in PLACES:
            raise ScenarioError(f"{where}: target must be one of {', '.join(PLACES)}")
        if m.fault in ("link", "partition") and m.target not in (None, "host", "guest"):
            raise ScenarioError(f"{where}: target of a {m.fault} is the link: host or guest")
        if m.fault == "toxic" and not m.toxic:
            raise ScenarioError(
                f'{where}: give the toxic, e.g. toxic = {{ type = "latency", latency = 200 }}'
            )
        if sum(x is not None for x in (m.at, m.every, m.rate)) > 1:
            raise ScenarioError(f"{where}: give one of at, every and rate")
        if (m.every is not None and m.every <= 0) or (m.rate is not None and m.rate <= 0):
            raise ScenarioError(f"{where}: every and rate must be > 0")
        if m.instance is not None and (m.role or m.roles):
            raise ScenarioError(f"{where}: give an instance or roles to draw from, not both")
        if m.toxic is not None:
            _toxic(m.toxic, where)
        if m.fault == "net":
            net_fault_of(m, None, m.duration or s.duration, where)
        if m.fault in ("replica-kill", "replica-hang") and not re.match(REPLICA, m.replica):
            raise ScenarioError(f"{where}: replica must be leader, follower or a replica's name")
        if m.fault == "database-restart" and not (m.database.stop_command and m.database.start_command):
            raise ScenarioError(f'{where}: give database = {{ stop_command = "...", start_command = "..." }}')


def _toxic(raw: dict[str, Any], where: str) -> Any:
    from fabric.network import InvalidSpecError
    from fabric.network.toxics import Toxic

    try:
        return msgspec.convert(raw, Toxic)
    except (msgspec.ValidationError, InvalidSpecError) as exc:
        raise ScenarioError(
            f"{where}: toxic {raw}: {exc} (type is latency, bandwidth, timeout, reset_peer or slow_close)"
        ) from None


def net_fault_of(entry: MethodEntry, target: Any, duration: float, where: str = "") -> Any:
    """The method line's network fault (fabric.controller.chaos.messages.NetworkFault).

    Raises:
        ScenarioError: not exactly one fault, or a value out of range.
    """
    from fabric.chaos.net import network_fault
    from fabric.controller.chaos.messages import Target

    n = entry.net
    try:
        return network_fault(
            target or Target(), partition=n.partition, loss=n.loss, bandwidth=n.bandwidth,
            delay=n.delay, jitter=n.jitter, duration=duration,
        )  # fmt: skip
    except ValueError as exc:
        message = str(exc).replace("--", "net.").replace("net.duration", "duration")
        raise ScenarioError(f"{where or entry.name or 'net'}: {message}") from None


def toxic_of(entry: MethodEntry) -> Any:
    """The method line's toxic as a fabric.network Toxic."""
    return _toxic(entry.toxic or {}, entry.name or "toxic")


def settings_of(scenario: Scenario) -> Settings:
    """The embedded fabric's settings: the fast profile (or ``profile = "azure"``) plus overrides.

    Raises:
        ScenarioError: an unknown setting or a bad value.
    """
    values = dict(scenario.settings)
    profile = values.pop("profile", "fast")
    if profile not in ("fast", "azure"):
        raise ScenarioError(f"settings.profile {profile!r}: use fast or azure")
    base = Settings.fast() if profile == "fast" else Settings()
    merged = msgspec.structs.asdict(base) | values
    try:
        return msgspec.convert(merged, Settings)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"settings: {exc}") from None
