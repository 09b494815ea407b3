"""Chaos on joined hosts' own processes and their process trees, through each host's link.

- ``kill``/``crash``/``hang`` of ``host-agent`` (the `fabric host join` process) or ``host`` (it
  and everything under it): the host's agent does it to itself (SignalHost), after its answer.
  A stopped agent cannot be reached to undo a hang, so such a hang needs a duration: the host
  resumes itself at its end, or when it is undone before: a backstop process there asks the
  join port meanwhile whether it was (fabric.cluster.hang_end; ``hang_undone`` answers).
- A hang of a VM's processes there is resumed by that host at its end even when the controller
  cannot reach it any more: the host is told the end (the fault's duration and a little more,
  so the controller's own undo normally comes first), or, for a hang until undone, a lease this
  side renews while the fault lasts (LEASE).
- ``fabric chaos targets``: each joined host lists its own processes (ListProcesses).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Literal, TypeVar

import anyio
import msgspec

from actors import ActorDead, ActorError, AskTimeout, Request
from fabric.controller.chaos import targets
from fabric.controller.chaos.messages import Crash, Hang, Hit, Kill
from fabric.controller.chaos.tree import Proc, ProcessMap
from fabric.controller.hosts import HostUnavailable
from fabric.controller.model import Deployment
from fabric.controller.state import ControllerState
from fabric.host.messages import HostProcess, ListProcesses, SignalHost, SignalVm

log = logging.getLogger("fabric.chaos")

#: how long a joined host may take to answer
TIMEOUT = 10.0
#: how long a joined host may take to list its processes (`fabric chaos targets` waits)
LIST_TIMEOUT = 5.0
#: a hang until undone is held on the host this long past each renewal
LEASE = 30.0
#: the host's own end of a hang with a duration comes this much after the controller's
GRACE = 1.0
SIGNALS = {"kill": "SIGKILL", "crash": "SIGABRT", "stop": "SIGSTOP"}
T = TypeVar("T")
#: the most undone hangs remembered for their hosts' backstops (the oldest forgotten first)
MAX_UNDONE = 1000
#: hangs of joined hosts' own processes undone before their end: (host, hang id), oldest first
_undone: dict[tuple[str, str], None] = {}


def mark_undone(host: str, hang: str) -> None:
    """Hang ``hang`` of ``host`` was undone: its backstop, asking, resumes the host."""
    _undone[(host, hang)] = None
    while len(_undone) > MAX_UNDONE:
        del _undone[next(iter(_undone))]


def hang_undone(host: str, hang: str) -> bool:
    """Whether hang ``hang`` of ``host`` was undone (the join port answers a backstop)."""
    return (host, hang) in _undone


def vm_stop_seconds(fault: Hang) -> float:
    """How long a joined host keeps a VM's processes stopped by itself (see the module)."""
    return fault.duration + GRACE if fault.duration else LEASE


async def renew_forever(
    state: ControllerState, host: str, vm: str, processes: list[tuple[int, float]], progress: object = None
) -> None:
    """Renew a hang's lease on its host until cancelled (the fault's undo); a host that cannot
    be reached ends the hang by itself when the lease runs out."""
    while True:
        await anyio.sleep(LEASE / 3)
        hold = SignalVm(instance_id=vm, action="hold", processes=processes, duration=LEASE)
        try:
            await state.hosts.ask(host, hold, TIMEOUT)
        except Exception as exc:  # unreachable now: tried again, or the host's timer ends it
            log.warning("renewing a hang of %s on host %s failed: %s", vm, host, exc)


async def ask_host(state: ControllerState, host: str, request: Request[Any], answer: type[T]) -> T:
    """Ask a joined host (a refusal when it cannot be reached or answer)."""
    try:
        found = await state.hosts.ask(host, request, TIMEOUT)
        return msgspec.convert(found, answer)  # decoded untyped off the link
    except msgspec.ValidationError as exc:
        raise targets.refuse(f"host {host} answered nonsense: {exc}", "ServiceUnavailable", 503) from None
    except HostUnavailable as exc:
        raise targets.refuse(f"host {host} cannot be reached now: {exc}", "ConflictError", 409) from None
    except ActorError as exc:
        raise targets.refuse(f"host {host}: {exc.message}", "ConflictError", 409) from None
    except AskTimeout:
        raise targets.refuse(
            f"host {host} did not answer within {TIMEOUT:g} s", "ServiceUnavailable", 503
        ) from None


async def host_fault(
    state: ControllerState, held: set[tuple[str, str]], fault: Kill | Crash | Hang, dep: Deployment, host: str
) -> tuple[list[Hit], list[str], str, float | None, str]:
    """Kill, crash or hang a joined host's own processes (its agent, or the whole host).
    Returns the hits, the instances hit, the detail, and (a hang) how long it lasts and its id.

    Raises:
        ControllerError: a hang without a duration, one in force already, or the host unreachable.
    """
    place = fault.target.place
    assert place in ("host", "host-agent")
    action: Literal["kill", "crash", "stop"] = (
        "kill" if isinstance(fault, Kill) else "crash" if isinstance(fault, Crash) else "stop"
    )
    seconds: float | None = None
    if isinstance(fault, Hang):
        if not fault.duration:
            raise targets.refuse(
                f"host {host} is a joined host: its own processes hang only for a while (give a duration:"
                " it resumes them itself at the end, since nothing can reach a stopped host)"
            )
        if ("process", f"{host}/host") in held:
            raise targets.refuse(f"host {host} is already hung by another fault", "ConflictError", 409)
        seconds = fault.duration
    hang = secrets.token_hex(8) if seconds is not None else ""
    request = SignalHost(place=place, action=action, duration=seconds or 0.0, id=hang)
    found = await ask_host(state, host, request, list[HostProcess])
    if seconds is not None:
        held.add(("process", f"{host}/host"))
    procs = [_proc(p, host) for p in found]
    ids = {i.vm: i.id for i in dep.ordered()}
    hits = [
        Hit(
            what="process",
            name=p.name,
            pid=p.pid,
            started=p.started,
            instance=ids.get(p.instance, p.instance),
            host=host,
            detail=p.place,
        )
        for p in procs
    ]
    instances = [i.id for i in dep.ordered() if i.host_id == host]
    what = f"{procs[0].name} (pid {procs[0].pid})" if procs else "nothing"
    more = f" and {len(procs) - 1} process(es) under it" if len(procs) > 1 else ""
    detail = f"{SIGNALS[action]} {what}{more} on host {host}"
    if seconds is not None:
        detail += f"; it resumes them itself in {seconds:g} s, or when undone"
    return hits, instances, detail, seconds, hang


async def joined_processes(state: ControllerState, procs: ProcessMap) -> ProcessMap:
    """``procs`` with every live joined host's own processes (each asked over its link; a host
    that does not answer in time is left out)."""
    found: dict[str, list[Proc]] = {}

    async def one(host: str) -> None:
        try:
            with anyio.fail_after(LIST_TIMEOUT):
                answer = await state.hosts.ask(host, ListProcesses(), LIST_TIMEOUT)
            found[host] = [_proc(p, host) for p in msgspec.convert(answer, list[HostProcess])]
        except (
            HostUnavailable,
            ActorError,
            ActorDead,
            AskTimeout,
            TimeoutError,
            msgspec.ValidationError,
        ) as exc:
            log.warning("joined host %s did not list its processes: %s", host, exc)

    async with anyio.create_task_group() as tg:
        for h in state.hosts.live():
            if h.joined and h.ref is not None:
                tg.start_soon(one, h.id)
    extra = [p for host in sorted(found) for p in found[host]]
    return ProcessMap(procs.root, [*procs.procs, *extra])


def _proc(p: HostProcess, host: str) -> Proc:
    return Proc(p.pid, p.ppid, p.pgid, p.name, p.started, p.place, p.instance, host)
