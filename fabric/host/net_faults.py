"""Chaos: real network faults on the host agent's own machine (its namespace, for a test host),
applied with nftables and tc, as Jepsen's nemeses do.

- partition: an nftables table of our own drops every packet but loopback's, both ways;
- loss N%: the same, dropping with ``numgen random mod 100 < N`` each way;
- bandwidth: a ``tbf`` qdisc on the egress of each interface that is up (not loopback);
- delay/jitter: a ``netem`` qdisc where the kernel has it (refused otherwise with NetemMissing:
  the controller then delays the host's link and its instances' replies itself,
  fabric.controller.chaos.net_delay).

Each fault is undone by the host itself, never by the controller (a partition cuts the
controller's link): by a timer in this process at its end, on ``clear``, when the host agent
stops (the timer's task is cancelled and undoes it), and, should this process be killed, by a
backstop process in a session of its own that sleeps until the end and removes what is left.
A partition is checked (``nft -c``), answered, and applied half a second later: it cuts the
link its answer goes back on.

Each fault in force is also written down in the host's folder (``chaos-net.json``: its undo
commands and its backstop): a host agent killed mid-fault (SIGKILL, a crash) and started again
undoes what it left at once (``sweep``), before it links, instead of waiting for the backstop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
import psutil  # type: ignore[import-untyped]

from actors import Request, register_error
from fabric.host.ledger import host_ledger, write_ledger
from fabric.host.processes import same_process

#: our nftables tables are "inet reddog_nf_<id>"
TABLE_PREFIX = "reddog_nf_"
#: a tbf or netem qdisc of ours has this handle
QDISC_HANDLE = "5e0d:"
#: seconds the backstop waits past the fault's end, so that the timer here acts first
BACKSTOP_GRACE = 2.0
#: a partition is checked, answered, and only then applied, this many seconds later: it cuts
#: the link its answer goes back on
ANSWER_FIRST = 0.5

NetAction = Literal["partition", "loss", "bandwidth", "delay", "clear"]
#: the most a network fault lasts (the host undoes it by itself at its end)
MAX_SECONDS = 86_400.0
#: the file, in the host's own folder, of the faults in force (swept at the next start)
LEDGER = "chaos-net.json"
#: the only commands a ledger's undo may run
UNDO_TOOLS = ("nft", "tc")


class NetFault(Request["NetFaultApplied"], frozen=True, tag=True, kw_only=True):
    """Controller -> host: apply a network fault on the host's own machine for ``duration``
    seconds (undone by the host itself), or ``clear`` one (``id``) or all (``id=""``)."""

    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{0,32}$")]
    action: NetAction
    #: loss: the share of packets dropped each way, in percent
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)] = 0.0
    #: bandwidth: bits per second (tbf's least is 8 kbit/s)
    rate: Annotated[int, msgspec.Meta(ge=0, le=10**12)] = 0
    #: delay and jitter, seconds
    delay: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.0
    duration: Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)] = 30.0


class NetFaultApplied(msgspec.Struct, frozen=True, kw_only=True):
    """What a host did for a NetFault, in words."""

    id: str
    action: NetAction
    detail: str


Spawner = Callable[..., None]


@register_error()
class NetFaultRefused(RuntimeError):
    """A network fault this host cannot apply (no tool, no netem, one already in force...);
    registered, so the controller tells the refusal apart from a bug."""


@register_error()
class NetemMissing(NetFaultRefused):
    """A delay refused because this kernel has no netem (the controller delays it otherwise)."""


@dataclass
class _Active:
    fault: NetFault
    undo: list[list[str]]
    detail: str
    #: a ruleset checked but applied only after the answer left (a partition)
    pending: str | None = None
    backstop: anyio.abc.Process | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


class NetFaults:
    """The network faults in force on this host, each with its timer.

    Args:
        start_soon: runs a background task for the owner's lifetime (Actor.start_soon); when it
            is cancelled, the fault is undone.
        log: writes one line to the host's log.
    """

    def __init__(
        self, start_soon: Spawner, log: Callable[[str], None] = lambda line: None, ledger: Path | None = None
    ) -> None:
        self.start_soon = start_soon
        self.log = log
        self.active: dict[str, _Active] = {}
        #: where the faults in force are written down (None: nowhere)
        self.ledger = ledger
        self._writing = anyio.Lock()

    async def handle(self, fault: NetFault) -> NetFaultApplied:
        """Apply (or clear) one fault; answers what was done.

        Raises:
            NetFaultRefused: the fault cannot be applied here (the message says why).
        """
        if fault.action == "clear":
            return await self.clear(fault.id)
        _check(fault)
        if fault.id in self.active:
            raise NetFaultRefused(f"network fault {fault.id} is already in force on this host")
        if fault.action in ("bandwidth", "delay") and any(
            a.fault.action in ("bandwidth", "delay") for a in self.active.values()
        ):
            raise NetFaultRefused(
                "a bandwidth or delay fault is already in force on this host (one qdisc at a time); clear it first"
            )
        if fault.action == "partition":
            table, ruleset = _table(fault)
            await _run(["nft", "-c", "-f", "-"], ruleset, need="nft")  # checked, applied later
            undo = [["nft", "delete", "table", "inet", table]]
            detail = f"every packet but loopback's dropped, both ways (nft table inet {table})"
            active = _Active(fault, undo, detail, pending=ruleset)
            lasting = ANSWER_FIRST + fault.duration
        else:
            undo, detail = await _apply(fault)
            active = _Active(fault, undo, detail)
            lasting = fault.duration
        self.active[fault.id] = active
        active.backstop = await _backstop(lasting + BACKSTOP_GRACE, undo)
        await self._write()
        self.log(f"network fault {fault.id}: {detail} for {fault.duration:g} s")
        self.start_soon(self._expire, active)
        return NetFaultApplied(id=fault.id, action=fault.action, detail=detail)

    async def clear(self, fault_id: str) -> NetFaultApplied:
        """Undo one fault now (``""``: every one); answers what was undone."""
        ids = [fault_id] if fault_id else list(self.active)
        undone = []
        for one in ids:
            active = self.active.get(one)
            if active is None:
                continue
            active.scope.cancel()
            await active.done.wait()
            undone.append(f"{one} ({active.fault.action})")
        detail = (
            f"undone: {', '.join(undone)}" if undone else "no such network fault in force (already undone)"
        )
        return NetFaultApplied(id=fault_id, action="clear", detail=detail)

    async def _expire(self, active: _Active) -> None:
        """Wait out the fault, then undo it (also when cancelled: clear, or the host stopping)."""
        try:
            with active.scope:
                if active.pending is not None:
                    await anyio.sleep(ANSWER_FIRST)
                    try:
                        await _run(["nft", "-f", "-"], active.pending, need="nft")
                    except NetFaultRefused as exc:  # checked before: the machine changed since
                        self.log(f"network fault {active.fault.id} not applied: {exc}")
                        return
                await anyio.sleep(active.fault.duration)
        finally:
            with anyio.CancelScope(shield=True):
                problems = await _run_all(active.undo)
                if active.backstop is not None:
                    with contextlib.suppress(ProcessLookupError):
                        active.backstop.kill()
                    await active.backstop.aclose()
                self.active.pop(active.fault.id, None)
                await self._write()
                active.done.set()
                self.log(
                    f"network fault {active.fault.id} undone"
                    + (f" (left: {'; '.join(problems)})" if problems else "")
                )

    async def _write(self) -> None:
        """Write down the faults in force now (the file removed when none is)."""
        if self.ledger is None:
            return
        async with self._writing:
            entries = {
                a.fault.id: {"undo": a.undo, "backstop": a.backstop.pid if a.backstop else 0}
                for a in self.active.values()
            }
            try:
                await anyio.to_thread.run_sync(_write_ledger, self.ledger, entries)
            except OSError as exc:
                self.log(f"network faults not written down in {self.ledger}: {exc}")


def _write_ledger(path: Path, entries: dict[str, Any]) -> None:
    for entry in entries.values():  # the backstop as (pid, start time): killed only if the same
        pid, entry["backstop"] = entry["backstop"], None
        if pid:
            with contextlib.suppress(psutil.Error):
                entry["backstop"] = [pid, psutil.Process(pid).create_time()]
    write_ledger(path, entries)


def ledger_path(state_dir: str | Path, host_id: str) -> Path:
    """The ledger of the network faults of host ``host_id`` (its own folder)."""
    return host_ledger(state_dir, host_id, LEDGER)


def sweep(path: Path) -> list[str]:
    """Undo what a host agent that did not stop cleanly left in force (blocking: a few
    commands); answers what was done, a line each. Its backstops are killed first."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        entries = {}
        said = [f"network faults left: {path} unreadable ({exc}); removed"]
    else:
        said = []
    for fault_id, entry in entries.items() if isinstance(entries, dict) else []:
        try:
            backstop = entry.get("backstop")
            if backstop and same_process(int(backstop[0]), float(backstop[1])) is not None:
                with contextlib.suppress(OSError):
                    os.killpg(int(backstop[0]), signal.SIGKILL)  # its own session: sh and its sleep
            undo = [[str(a) for a in argv] for argv in entry["undo"] if argv and argv[0] in UNDO_TOOLS]
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            said.append(f"network fault {fault_id!s:.40}: a malformed entry, skipped")
            continue
        problems = _undo_now(undo)
        said.append(
            f"network fault {fault_id!s:.40} left in force by an agent that did not stop: undone"
            + (f" (left: {'; '.join(problems)})" if problems else "")
        )
    path.unlink(missing_ok=True)
    return said


def _undo_now(commands: list[list[str]]) -> list[str]:
    """_run_all, blocking (at a host's start, before its event loop has work)."""
    problems = []
    for argv in commands:
        try:
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{' '.join(argv)}: {exc}")
            continue
        err = done.stderr.decode(errors="replace").strip()
        if done.returncode != 0 and "No such file" not in err and "Invalid handle" not in err:
            problems.append(f"{' '.join(argv)}: {err.splitlines()[0] if err else done.returncode}")
    return problems


_per_owner: weakref.WeakKeyDictionary[Any, NetFaults] = weakref.WeakKeyDictionary()


async def apply_net_fault(owner: Any, fault: NetFault) -> NetFaultApplied:
    """Handle a NetFault for ``owner`` (a host agent: its start_soon, log and config are used;
    the faults in force are written down in its own folder)."""
    faults = _per_owner.get(owner)
    if faults is None:
        log = getattr(getattr(owner, "log", None), "write", lambda line: None)
        config = getattr(owner, "config", None)
        ledger = ledger_path(config.state_dir, config.host_id) if config is not None else None
        faults = _per_owner[owner] = NetFaults(owner.start_soon, log, ledger)
    return await faults.handle(fault)


def _check(fault: NetFault) -> None:
    """Refuse a fault that would do nothing, or that tc cannot do."""
    if fault.action == "loss" and not 0 < fault.percent <= 100:
        raise NetFaultRefused(f"loss {fault.percent:g}%: give a share of packets above 0, at most 100%")
    if fault.action == "bandwidth" and fault.rate < 8000:
        raise NetFaultRefused(f"bandwidth {fault.rate} bit/s: at least 8kbit")
    if fault.action == "delay" and not (fault.delay or fault.jitter):
        raise NetFaultRefused("a delay fault needs a delay or a jitter above 0")


# -- the commands ---------------------------------------------------------------------------------


async def _apply(fault: NetFault) -> tuple[list[list[str]], str]:
    """Apply ``fault``; answer the commands that undo it and what it does, in words."""
    match fault.action:
        case "loss":
            table, ruleset = _table(fault)
            await _run(["nft", "-f", "-"], ruleset, need="nft")
            what = f"{fault.percent:g}% of packets dropped each way"
            return [["nft", "delete", "table", "inet", table]], f"{what} (nft table inet {table})"
        case "bandwidth":
            spec = ["tbf", "rate", f"{fault.rate}bit", "burst", str(_burst(fault.rate)), "latency", "100ms"]
            devices = await _apply_qdisc(spec)
            return _qdisc_undo(
                devices
            ), f"egress limited to {_rate(fault.rate)} (tbf on {', '.join(devices)})"
        case "delay":
            spec = ["netem", "delay", f"{fault.delay * 1000:g}ms"]
            if fault.jitter:
                spec.append(f"{fault.jitter * 1000:g}ms")
            devices = await _apply_qdisc(spec)
            jitter = f" +- {fault.jitter * 1000:g} ms" if fault.jitter else ""
            return (
                _qdisc_undo(devices),
                f"egress delayed {fault.delay * 1000:g} ms{jitter} (netem on {', '.join(devices)})",
            )
    raise NetFaultRefused(f"unknown network fault {fault.action!r}")


def _table(fault: NetFault) -> tuple[str, str]:
    """The name of the fault's nftables table, and its ruleset."""
    table = TABLE_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", fault.id)
    return table, _ruleset(table, _drop_rule(fault))


def _drop_rule(fault: NetFault) -> str:
    if fault.action == "partition":
        return "drop"
    if fault.percent == int(fault.percent):
        return f"numgen random mod 100 < {int(fault.percent)} drop"
    return f"numgen random mod 10000 < {round(fault.percent * 100)} drop"


def _ruleset(table: str, rule: str) -> str:
    """A table of our own: ``rule`` on every packet in, out and through, but loopback's."""
    return f"""table inet {table} {{
  chain input {{ type filter hook input priority -200; policy accept; iifname "lo" accept; {rule}; }}
  chain output {{ type filter hook output priority -200; policy accept; oifname "lo" accept; {rule}; }}
  chain forward {{ type filter hook forward priority -200; policy accept; {rule}; }}
}}
"""


def _burst(rate: int) -> int:
    """tbf's bucket in bytes: 10 ms at the rate, and at least two full frames."""
    return max(rate // 8 // 100, 3028)


def _rate(bits: int) -> str:
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= size:
            return f"{bits / size:g} {unit}/s"
    return f"{bits} bit/s"


async def _apply_qdisc(spec: list[str]) -> list[str]:
    """Add ``spec`` as the root qdisc of each interface that is up (not loopback)."""
    devices = await _devices()
    if not devices:
        raise NetFaultRefused("this host has no interface up besides loopback")
    done: list[str] = []
    try:
        for dev in devices:
            await _run(["tc", "qdisc", "add", "dev", dev, "root", "handle", QDISC_HANDLE, *spec], need="tc")
            done.append(dev)
    except NetFaultRefused:
        await _run_all(_qdisc_undo(done))
        raise
    return done


def _qdisc_undo(devices: Sequence[str]) -> list[list[str]]:
    return [["tc", "qdisc", "del", "dev", dev, "root", "handle", QDISC_HANDLE] for dev in devices]


async def _devices() -> list[str]:
    out = await _run(["ip", "-j", "link", "show", "up"], need="ip")
    return [
        link["ifname"]
        for link in json.loads(out or "[]")
        # iproute2 prints {} for each link the "up" filter leaves out (an ifb device that is down)
        if "ifname" in link and link.get("link_type") != "loopback" and "@" not in link["ifname"]
    ]


_TOOLS = {"nft": "nftables", "tc": "iproute2", "ip": "iproute2"}


async def _run(argv: list[str], stdin: str | None = None, *, need: str) -> str:
    """Run one command (bounded: 10 s); a failure is a one-line NetFaultRefused."""
    if shutil.which(need) is None:
        raise NetFaultRefused(f"`{need}` is not installed on this host (apt-get install {_TOOLS[need]})")
    with anyio.fail_after(10):
        done = await anyio.run_process(argv, input=stdin.encode() if stdin else None, check=False)
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        reason = why[0] if why else f"exit {done.returncode}"
        if argv[:2] == ["tc", "qdisc"] and "netem" in argv and "unknown" in reason.lower():
            raise NetemMissing(
                f"this kernel has no netem ({reason}); delay a host's link with "
                "`fabric chaos link --delay`, or a load balancer's path with `fabric chaos toxic latency`"
            )
        if "NLM_F_REPLACE" in reason or "Exclusivity" in reason:
            reason = f"{argv[4]} has a root qdisc already ({reason})"
        raise NetFaultRefused(f"{' '.join(argv[:3])}: {reason}")
    return done.stdout.decode()


async def _run_all(commands: list[list[str]]) -> list[str]:
    """Run each undo command; answer the failures (a table or qdisc gone already is not one)."""
    problems = []
    for argv in commands:
        try:
            with anyio.fail_after(10):
                done = await anyio.run_process(argv, check=False)
        except (OSError, TimeoutError) as exc:
            problems.append(f"{' '.join(argv)}: {exc}")
            continue
        err = done.stderr.decode(errors="replace").strip()
        if done.returncode != 0 and "No such file" not in err and "Invalid handle" not in err:
            problems.append(f"{' '.join(argv)}: {err.splitlines()[0] if err else done.returncode}")
    return problems


async def _backstop(seconds: float, undo: list[list[str]]) -> anyio.abc.Process | None:
    """A process of its own session that undoes the fault after ``seconds`` should this one be
    killed first (the timer here kills it when it undoes the fault itself)."""
    steps = (shlex.join(argv) + " 2>/dev/null" for argv in undo)
    script = f"sleep {seconds:.3f}; " + "; ".join(steps)
    quiet = subprocess.DEVNULL
    try:
        return await anyio.open_process(
            ["sh", "-c", script], start_new_session=True, stdin=quiet, stdout=quiet, stderr=quiet
        )
    except OSError:
        return None
