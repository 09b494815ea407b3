"""`fabric chaos ...`: inject faults into a running fabric, and run seeded chaos scenarios.

One-shot faults (kill, crash, hang, link, partition, toxic, startup, fill, storm, net) go through
the fabric's API; `targets`, `faults` and `rollback` show and undo them. `run` plays a scenario
against a running fabric (--state-dir) or one of its own (--service DIR); `replay` plays a
journal's schedule again; `plan` prints a schedule without running it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import click
import msgspec

from fabric.chaos.cli import plan, replay, run
from fabric.chaos.scenario import ScenarioError
from fabric.client import AsyncFabricClient
from fabric.commands import chaos_replicas
from fabric.commands.client import state_dir_option, user_errors
from fabric.controller.chaos.messages import (
    PLACES,
    ConfigStorm,
    Crash,
    Fault,
    FaultRecord,
    FillStorage,
    Hang,
    Inject,
    Kill,
    LinkFault,
    Partition,
    StartupFault,
    Target,
    TargetMap,
    ToxicFault,
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_PATH = click.Path(path_type=Path)


@click.group()
def chaos() -> None:
    """Break a running service on purpose: faults at every layer, seeded scenarios, a report."""


def _call(state_dir: Path, call: Callable[[AsyncFabricClient], Awaitable[T]]) -> T:
    """Run ``call`` with a client of the fabric at ``state_dir``; a user's error exits 2."""

    async def main() -> T:
        async with AsyncFabricClient(state_dir) as client:
            return await call(client)

    with user_errors(ScenarioError, ValueError):
        return anyio.run(main, backend="trio")


def _where(f: F) -> F:
    """The target options shared by the fault commands."""
    for option in reversed(
        [
            click.option("--instance", help="An instance id (Web_IN_0) or VM name."),
            click.option("--role", help="With --random: any instance of this role."),
            click.option("--random", "pick_random", is_flag=True, help="Pick the instance at random."),
            click.option("--seed", type=int, help="Seed of the --random pick."),
            click.option("--host", help="A host id (local-host1)."),
            click.option("--service", help="The hosted service (default: the only deployment)."),
            click.option("--slot", type=click.Choice(["production", "staging"]), default="production"),
            click.option("--json", "as_json", is_flag=True, help="Print the fault record as JSON."),
        ]
    ):
        f = option(f)
    return state_dir_option(f)


def _target(opts: dict[str, Any], place: str | None = None, endpoint: str | None = None) -> Target:
    return Target(
        service=opts["service"],
        slot=opts["slot"],
        place=cast(Any, place),
        instance=opts["instance"],
        role=opts["role"],
        host=opts["host"],
        endpoint=endpoint,
        random=opts["pick_random"],
        seed=opts["seed"],
    )


def _inject(fault: Fault, opts: dict[str, Any]) -> None:
    async def call(client: AsyncFabricClient) -> tuple[FaultRecord, list[str]]:
        record = await client.inject(Inject(fault=fault))
        return record, [] if opts["as_json"] else await _restarts(client, record)

    record, restarts = _call(opts["state_dir"], call)
    if opts["as_json"]:
        click.echo(msgspec.json.encode(record).decode())
        return
    hits = ", ".join(f"{h.name}" + (f" (pid {h.pid})" if h.pid else "") for h in record.hits)
    lasting = _lasting(record)
    click.echo(
        f"{record.id} {record.label} at {record.wall}: {record.detail}"
        + (f" [{hits}]" if hits else "")
        + lasting
    )
    for line in restarts:
        click.echo(line)


#: how long a kill or crash of a role host waits for its instance's next status (the restart)
RESTART_WAIT = 3.0


async def _restarts(client: AsyncFabricClient, record: FaultRecord) -> list[str]:
    """For each role host a kill or crash hit, its instance's first status after it (how the
    bootstrapper restarts it: at once, or later when restarts back off), waited for briefly."""
    pending = {h.instance for h in record.hits if h.detail == "role-host" and h.instance}
    if record.kind not in ("kill", "crash") or not pending:
        return []
    lines: list[str] = []
    with anyio.move_on_after(RESTART_WAIT):
        for instance in sorted(pending):
            after = 0
            while True:
                page = await client.events({"instance": instance, "kind": "status"}, after=after, wait=1.0)
                after = page.next
                found = next((e for e in page.events if e.t >= record.at and e.status != "ReadyRole"), None)
                if found is not None:
                    lines.append(f"  then {found.message}")
                    break
    return lines


def _lasting(record: FaultRecord) -> str:
    """How long a fault stays in force: until a time (with --duration), or until undone."""
    if record.state != "active":
        return ""
    if record.until is None:
        return f"; active until undone (`fabric chaos rollback {record.id}`)"
    seconds = record.until - record.at
    ends = dt.datetime.fromisoformat(record.wall) + dt.timedelta(seconds=seconds)
    return (
        f"; active for {seconds:g} s, until {ends:%H:%M:%S} UTC "
        f"(`fabric chaos rollback {record.id}` ends it sooner)"
    )


_PLACE = click.Choice(PLACES)
_DURATION = click.option(
    "--duration", type=float, help="Undo it after this many seconds (default: at rollback)."
)


@chaos.command()
@click.option("--target", "place", type=_PLACE, required=True, help="Which process of the instance or host.")
@_where
def kill(place: str, **opts: Any) -> None:
    """SIGKILL a process by its place in the tree (host: every process of the host)."""
    _inject(Kill(target=_target(opts, place)), opts)


@chaos.command()
@click.option("--target", "place", type=_PLACE, required=True, help="Which process of the instance or host.")
@_where
def crash(place: str, **opts: Any) -> None:
    """SIGABRT a process, as a fatal internal error would (no core file)."""
    _inject(Crash(target=_target(opts, place)), opts)


@chaos.command()
@click.option("--target", "place", type=_PLACE, required=True, help="Which process of the instance or host.")
@_DURATION
@_where
def hang(place: str, duration: float | None, **opts: Any) -> None:
    """SIGSTOP a process (host: all of its processes); SIGCONT after --duration or at rollback."""
    _inject(Hang(target=_target(opts, place), duration=duration), opts)


@chaos.command()
@click.option("--link", type=click.Choice(["host", "guest"]), default="host", show_default=True,
              help="host: controller<->host agent; guest: host agent<->VM.")  # fmt: skip
@click.option("--drop", type=float, default=0.0, help="Lose each message with this probability.")
@click.option("--delay", type=float, default=0.0, help="Hold each message this many seconds.")
@click.option("--jitter", type=float, default=0.0, help="Plus a random 0..jitter seconds.")
@click.option("--cut", is_flag=True, help="Lose every message.")
@click.option("--direction", type=click.Choice(["out", "in", "both"]), default="both", show_default=True)
@_DURATION
@_where
def link(
    link: str,
    drop: float,
    delay: float,
    jitter: float,
    cut: bool,
    direction: str,
    duration: float | None,
    **opts: Any,
) -> None:
    """Drop, delay (with jitter) or cut the messages on an actor link."""
    fault = LinkFault(
        target=_target(opts), link=cast(Any, link), drop=drop, delay=delay, jitter=jitter, cut=cut,
        direction=cast(Any, direction), duration=duration,
    )  # fmt: skip
    _inject(fault, opts)


@chaos.command()
@click.option("--link", type=click.Choice(["host", "guest"]), default="host", show_default=True)
@_DURATION
@_where
def partition(link: str, duration: float | None, **opts: Any) -> None:
    """Cut a host (or a VM) off: its link cut both ways."""
    _inject(Partition(target=_target(opts), link=cast(Any, link), duration=duration), opts)


@chaos.command()
@click.argument("kind", type=click.Choice(["latency", "bandwidth", "timeout", "reset_peer", "slow_close"]))
@click.option("--endpoint", help="Role/Endpoint (default: the only load-balanced one).")
@click.option("--latency", type=float, default=0.0, help="latency: ms per chunk.")
@click.option("--jitter", type=float, default=0.0, help="latency: +- ms.")
@click.option("--rate", type=float, default=0.0, help="bandwidth: KB/s.")
@click.option("--timeout", type=float, default=0.0, help="timeout, reset_peer: ms.")
@click.option("--delay", type=float, default=0.0, help="slow_close: ms.")
@click.option(
    "--stream", type=click.Choice(["upstream", "downstream"]), default="downstream", show_default=True
)
@click.option("--toxicity", type=float, default=1.0, show_default=True, help="Share of connections hit.")
@_DURATION
@_where
def toxic(kind: str, endpoint: str | None, duration: float | None, **opts: Any) -> None:
    """Add a toxiproxy-style toxic to a load balancer."""
    params = {"latency": ("latency", "jitter"), "bandwidth": ("rate",), "timeout": ("timeout",),
              "reset_peer": ("timeout",), "slow_close": ("delay",)}[kind]  # fmt: skip
    raw = {"type": kind, "stream": opts.pop("stream"), "toxicity": opts.pop("toxicity")}
    values = {name: opts.pop(name) for name in ("latency", "jitter", "rate", "timeout", "delay")}
    raw.update({name: values[name] for name in params})
    with user_errors(ValueError):
        from fabric.network.toxics import Toxic

        spec = msgspec.convert(raw, Toxic)
    _inject(ToxicFault(target=_target(opts, endpoint=endpoint), toxic=spec, duration=duration), opts)


@chaos.command()
@click.option("--partition", is_flag=True, help="Drop every packet but loopback's, both ways.")
@click.option("--loss", help="Drop this share of packets each way (5%).")
@click.option("--bandwidth", help="Cap egress at this rate (1mbit, 500kbit).")
@click.option("--delay", help="Delay egress (100ms; needs netem in the host's kernel).")
@click.option("--jitter", help="With --delay: +- this much (20ms).")
@click.option("--duration", "lasting", help="How long (30s); the host undoes it itself at its end.")
@_where
def net(
    partition: bool, loss: str | None, bandwidth: str | None, delay: str | None, jitter: str | None,
    lasting: str | None, **opts: Any,
) -> None:  # fmt: skip
    """A real network fault on a joined host's machine (nftables, tc): partition, loss, bandwidth, delay."""
    from fabric.chaos.net import network_fault

    with user_errors(ValueError):
        fault = network_fault(
            _target(opts), partition=partition, loss=loss, bandwidth=bandwidth, delay=delay,
            jitter=jitter, duration=lasting,
        )  # fmt: skip
    _inject(fault, opts)


@chaos.command()
@click.option("--startup-task", type=click.Choice(["fail", "hang"]), help="The next startup tasks' run.")
@click.option("--on-start", type=click.Choice(["fail", "slow"]), help="The next on_start.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="How slow a slow on_start is.")
@click.option(
    "--trigger", type=click.Choice(["auto", "kill", "reboot", "none"]), default="auto", show_default=True
)
@_DURATION
@_where
def startup(
    startup_task: str | None,
    on_start: str | None,
    seconds: float,
    trigger: str,
    duration: float | None,
    **opts: Any,
) -> None:
    """Make the next role start misbehave (writes C/Config/Chaos.json, then triggers a start)."""
    fault = StartupFault(
        target=_target(opts), startup_task=cast(Any, startup_task), on_start=cast(Any, on_start),
        seconds=seconds, trigger=cast(Any, trigger), duration=duration,
    )  # fmt: skip
    _inject(fault, opts)


@chaos.command()
@click.option("--storage", help="The LocalStorage resource (default: the role's first).")
@click.option("--extra-mb", type=int, default=1, show_default=True, help="How far past its size.")
@_DURATION
@_where
def fill(storage: str | None, extra_mb: int, duration: float | None, **opts: Any) -> None:
    """Fill a LocalStorage folder past its sizeInMB."""
    _inject(FillStorage(target=_target(opts), storage=storage, extra_mb=extra_mb, duration=duration), opts)


@chaos.command()
@click.option("--setting", help="The setting to toggle (default: the role's first).")
@click.option("--count", type=int, default=5, show_default=True, help="How many ChangeConfiguration.")
@click.option("--interval", type=float, default=0.0, help="Seconds between changes.")
@_where
def storm(setting: str | None, count: int, interval: float, **opts: Any) -> None:
    """A configuration change storm: COUNT changes in a row, one setting toggled."""
    _inject(ConfigStorm(target=_target(opts), setting=setting, count=count, interval=interval), opts)


@chaos.command()
@click.option("--service", help="The hosted service (default: every deployment).")
@click.option("--slot", type=click.Choice(["production", "staging"]), help="The slot (default: every slot).")
@click.option("--json", "as_json", is_flag=True, help="One target map per deployment, one per line.")
@state_dir_option
def targets(service: str | None, slot: str | None, as_json: bool, state_dir: Path) -> None:
    """Show what faults can hit: instances, their processes, hosts and endpoints."""

    async def every(client: AsyncFabricClient) -> list[TargetMap]:
        wanted = [
            (d.service, d.slot)
            for d in await client.deployments()
            if service in (None, d.service) and slot in (None, d.slot)
        ]
        if service is not None and not wanted:
            # Not deployed (or a typo): the fabric's own answer says which.
            return [await client.targets(service, slot or "production")]
        return [await client.targets(s, t) for s, t in sorted(wanted)]

    found = _call(state_dir, every)
    if not found:
        click.echo("no deployments (deploy one with `fabric deploy SERVICE`)")
    for one in found:
        if as_json:
            click.echo(msgspec.json.encode(one).decode())
        else:
            _show_targets(one)


def _show_targets(found: TargetMap) -> None:
    click.echo(f"{found.service}/{found.slot} (pool {found.pool}, fabric pid {found.fabric_pid})")
    for i in found.instances:
        procs = ", ".join(f"{k} {v}" for k, v in i.processes.items())
        rot = "" if i.rotation is None else (" in rotation" if i.rotation else " out of rotation")
        click.echo(f"  {i.id:<14} {i.status:<16} {i.host:<14}{rot}  [{procs}]")
    for h in found.hosts:
        click.echo(f"  host {h.id} pid {h.pid}: {', '.join(h.instances) or 'no instance'}")
    for e in found.endpoints:
        click.echo(f"  endpoint {e.name} {e.host}:{e.port}: rotation {', '.join(e.rotation) or 'empty'}"
                   + (f"; toxics {', '.join(e.toxics)}" if e.toxics else ""))  # fmt: skip


@chaos.command()
@click.option("--json", "as_json", is_flag=True)
@state_dir_option
def faults(as_json: bool, state_dir: Path) -> None:
    """List faults: those in force first, then the most recent."""
    records = _call(state_dir, lambda client: client.faults())
    if as_json:
        click.echo(msgspec.json.encode(records).decode())
        return
    for r in records:
        click.echo(f"{r.id:<5} {r.state:<7} {r.wall}  {r.label}: {r.detail}")


@chaos.command()
@click.argument("fault_id", required=False)
@state_dir_option
def rollback(fault_id: str | None, state_dir: Path) -> None:
    """Undo one fault, or every fault in force."""
    for r in _call(state_dir, lambda client: client.undo(fault_id)):
        click.echo(f"{r.id} {r.label}: {r.state}: {r.detail}")


for _command in (run, replay, plan, chaos_replicas.replica, chaos_replicas.database):
    chaos.add_command(_command)  # replica, database: the control plane's faults
