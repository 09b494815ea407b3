"""A scenario's fault schedule: every fault, its time and its target, drawn from a seed.

The same scenario, seed, duration and topology always give the same schedule: each method line
draws from its own generator (seeded by the run's seed and the line's number), times first,
then a target for each time. Targets are instances by id (``Web_IN_1``), a host by id or as
"the host of an instance", or an endpoint; the fabric finds the process or link behind each
when the fault is injected, and the journal records what it hit.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import cast

import msgspec

from fabric.chaos.scenario import MethodEntry, Scenario, ScenarioError, net_fault_of, toxic_of
from fabric.controller.chaos.messages import (
    ConfigStorm,
    Crash,
    Fault,
    FillStorage,
    Hang,
    Inject,
    Kill,
    Link,
    LinkFault,
    Partition,
    Place,
    StartupFault,
    Target,
    ToxicFault,
)

#: a method line may plan at most this many faults (a rate of 1000/s over an hour is a typo)
MAX_PER_LINE = 10_000
#: and the whole schedule too: a scenario's lines add up (a thousand of them fit its 64 KiB)
MAX_FAULTS = 10_000


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    """What a schedule draws targets from: each role's instance count."""

    roles: dict[str, int]

    def instances(self, roles: list[str] | None = None) -> list[str]:
        """Instance ids (``Role_IN_n``) of ``roles`` (all roles when None), sorted."""
        wanted = self.roles if not roles else {r: self.roles.get(r, 0) for r in roles}
        return sorted(f"{role}_IN_{i}" for role, n in wanted.items() for i in range(n))

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> Topology:
        """From role -> instance count."""
        return cls(roles=dict(sorted(counts.items())))


class PlannedFault(msgspec.Struct, frozen=True, kw_only=True):
    """One fault of the schedule: ``at`` seconds after the method starts."""

    n: int
    at: float
    line: int
    inject: Inject


def plan(
    scenario: Scenario, seed: int, topology: Topology, duration: float | None = None
) -> list[PlannedFault]:
    """The fault schedule of ``scenario`` for ``seed`` over ``duration`` (default: the scenario's).

    Raises:
        ScenarioError: a method line names a role the topology lacks, or plans too many faults
            (more than MAX_PER_LINE, or more than MAX_FAULTS with the lines before it).
    """
    length = scenario.duration if duration is None else duration
    items: list[tuple[float, int, Inject]] = []
    for line, entry in enumerate(scenario.method, 1):
        if entry.fault in ("replica-kill", "replica-hang", "database-restart"):
            continue  # the runner applies these itself (fabric.chaos.control)
        rng = random.Random(f"reddog-chaos:{seed}:{line}")
        for at in _times(entry, length, rng, line):
            target = _target(scenario, entry, topology, rng, line)
            lasting = entry.duration if entry.duration is not None else max(0.0, length - at)
            fault = _fault(entry, target, lasting)
            if isinstance(fault, LinkFault):
                # Its own generator, not the line's: the times and targets stay as they were.
                link_seed = random.Random(f"reddog-chaos-link:{seed}:{line}:{at!r}").randrange(1, 2**31)
                fault = msgspec.structs.replace(fault, seed=link_seed)
            where = _where(entry, target)
            label = f"{entry.name} ({where})" if entry.name else f"{entry.fault} {where}"
            items.append((round(at, 6), line, Inject(fault=fault, label=label)))
            if len(items) > MAX_FAULTS:
                raise ScenarioError(
                    f"the scenario plans more than {MAX_FAULTS} faults in all (method line {line} "
                    "and those before it): lower their rates, or split it"
                )
    items.sort(key=lambda item: (item[0], item[1]))
    return [
        PlannedFault(n=n, at=at, line=line, inject=inject) for n, (at, line, inject) in enumerate(items, 1)
    ]


def _times(entry: MethodEntry, length: float, rng: random.Random, line: int) -> Iterator[float]:
    """The line's times, drawn one by one: the caller draws each one's target before the next
    time, so a shorter run's schedule is the start of a longer one's."""
    stop = min(length, entry.stop) if entry.stop is not None else length
    count = 0
    if entry.at is not None:
        wanted = entry.at if isinstance(entry.at, list) else [entry.at]
        yield from (float(t) for t in wanted if 0 <= t < length)
        return
    if entry.every is None and entry.rate is None:
        if entry.start < length:
            yield entry.start
        return
    t = entry.start if entry.every is not None else entry.start + rng.expovariate(entry.rate or 1.0)
    while t < stop:
        count += 1
        if count > MAX_PER_LINE:
            raise ScenarioError(f"method line {line} plans more than {MAX_PER_LINE} faults: lower its rate")
        if entry.every is not None:
            yield min(t + (rng.uniform(0.0, entry.jitter) if entry.jitter else 0.0), stop)
            t += entry.every
        else:
            yield t
            t += rng.expovariate(entry.rate or 1.0)


def _target(scenario: Scenario, entry: MethodEntry, topo: Topology, rng: random.Random, line: int) -> Target:
    service, slot = scenario.service.name, scenario.service.slot
    base = Target(service=service, slot=slot, place=_place(entry))
    if entry.fault == "toxic":
        return msgspec.structs.replace(base, endpoint=entry.endpoint or scenario.load.endpoint)
    if entry.fault == "storm":
        role = entry.role or (entry.roles[0] if entry.roles else None)
        return msgspec.structs.replace(base, role=role, instance=entry.instance)
    if entry.instance is not None:
        return msgspec.structs.replace(base, instance=entry.instance)
    if entry.host is not None:
        return msgspec.structs.replace(base, host=entry.host)
    roles = list(entry.roles) + ([entry.role] if entry.role else [])
    missing = [r for r in roles if r not in topo.roles]
    if missing:
        known = ", ".join(topo.roles) or "none"
        raise ScenarioError(
            f"method line {line}: no role {', '.join(missing)} in the service (its roles: {known})"
        )
    candidates = topo.instances(roles or None)
    if not candidates:
        raise ScenarioError(f"method line {line}: no instance to draw a target from")
    return msgspec.structs.replace(base, instance=rng.choice(candidates))


def _where(entry: MethodEntry, t: Target) -> str:
    """What a planned fault aims at, in words: ``role-host@Web_IN_1``, ``host link of Web_IN_0``."""
    if entry.fault in ("link", "partition"):
        link = entry.target if entry.target in ("host", "guest") else "host"
        if link == "host":
            return f"host link {t.host}" if t.host else f"host link of {t.instance}"
        return f"guest link of {t.instance}"
    if entry.fault == "net":
        return f"network of {t.host}" if t.host else f"network of the host of {t.instance}"
    if entry.fault == "toxic":
        kind = (entry.toxic or {}).get("type", "toxic")
        return f"{kind} on {t.endpoint or 'the load balancer'}"
    if entry.fault == "storm":
        return f"settings of {t.role or t.instance or 'the first role'}"
    return t.label()


def _place(entry: MethodEntry) -> Place | None:
    return cast(Place, entry.target) if entry.fault in ("kill", "crash", "hang") else None


def _fault(entry: MethodEntry, target: Target, duration: float) -> Fault:
    link: Link = "guest" if entry.target == "guest" else "host"
    match entry.fault:
        case "kill":
            return Kill(target=target)
        case "crash":
            return Crash(target=target)
        case "hang":
            return Hang(target=target, duration=duration)
        case "link":
            p = entry.link
            return LinkFault(
                target=target,
                link=link,
                drop=p.drop,
                delay=p.delay,
                jitter=p.jitter,
                cut=p.cut,
                direction=p.direction,
                duration=duration,
            )
        case "partition":
            return Partition(target=target, link=link, duration=duration)
        case "toxic":
            return ToxicFault(target=target, toxic=toxic_of(entry), duration=duration)
        case "startup":
            s = entry.startup
            return StartupFault(
                target=target,
                startup_task=s.startup_task,
                on_start=s.on_start,
                seconds=s.seconds,
                trigger=s.trigger,
                duration=duration,
            )
        case "fill":
            return FillStorage(
                target=target, storage=entry.storage, extra_mb=entry.extra_mb, duration=duration
            )
        case "storm":
            st = entry.storm
            return ConfigStorm(target=target, setting=st.setting, count=st.count, interval=st.interval)
        case "net":
            fault: Fault = net_fault_of(entry, target, duration)
            return fault
    raise ScenarioError(f"unknown fault {entry.fault!r}")
