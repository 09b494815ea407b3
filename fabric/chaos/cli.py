"""`fabric chaos run`, `replay` and `plan`: scenarios from the command line.

``run`` exits 0 when the steady-state hypothesis held, 1 when it did not (or the run was
interrupted), 2 for a mistake in the command, the scenario or the service. Ctrl-C once stops
the method early (rollbacks run and a report is made); twice stops at once (rollbacks still run).
"""

from __future__ import annotations

import random
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click
import msgspec

from fabric.chaos.scenario import Scenario, ScenarioError, load_scenario
from fabric.commands.client import fail as _fail
from fabric.server import STOP_SIGNALS, leave_terminal

if TYPE_CHECKING:
    from fabric.chaos.report import Report
    from fabric.chaos.runner import Run
    from fabric.chaos.schedule import PlannedFault, Topology

# The runner, report and journal load when a command runs: `fabric` itself starts faster.

_FILE = click.Path(path_type=Path, exists=True, dir_okay=False)
_PATH = click.Path(path_type=Path)


def _service_of(scenario: Scenario, scenario_file: Path) -> tuple[Path | None, Path | None]:
    """The scenario's [service] path and config, relative to the scenario file."""
    base = scenario_file.parent
    path = base / scenario.service.path if scenario.service.path else None
    config = base / scenario.service.config if scenario.service.config else None
    return path, config


def _run_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--duration", type=float, help="Seconds of method (default: the scenario's)."),
            click.option(
                "--service",
                "service_dir",
                type=_PATH,
                help="Start a fabric here serving this service folder (or .cspkg), run, stop it.",
            ),
            click.option(
                "--embedded", is_flag=True, help="Like --service, with the scenario's [service] path."
            ),
            click.option("--config", "config_file", type=_FILE, help="With --service: its configuration."),
            click.option(
                "--state-dir",
                type=_PATH,
                help="The running fabric's state folder (default .fabric); "
                "with --service, where the fabric keeps its state (default: a temporary folder).",
            ),
            click.option(
                "--json", "json_out", type=_PATH, help="Write the report as JSON to this file ('-': stdout)."
            ),
            click.option(
                "--html",
                "html_out",
                type=_PATH,
                help="Write the report as one self-contained HTML file (charts in SVG).",
            ),
            click.option(
                "--journal",
                type=_PATH,
                help="Where the run's journal (scenario, seed, schedule, report) goes "
                "[default: journal.json; for a replay, JOURNAL.replay.json].",
            ),
            click.option("--quiet", is_flag=True, help="No progress lines."),
        ]
    ):
        f = option(f)
    return f


@click.command()
@click.argument("scenario_file", metavar="SCENARIO", type=_FILE)
@click.option("--seed", type=int, help="The seed of the fault schedule (default: a new one, printed).")
@_run_options
def run(scenario_file: Path, seed: int | None, **opts: Any) -> None:
    """Run a chaos scenario (TOML) and report whether its steady-state hypothesis held."""
    try:
        scenario = load_scenario(scenario_file)
    except ScenarioError as exc:
        raise _fail(str(exc)) from None
    from fabric.chaos.runner import Run

    seed = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
    _play(
        Run(scenario=scenario, scenario_file=str(scenario_file), seed=seed, duration=opts.pop("duration")),
        scenario_file,
        **opts,
    )


@click.command()
@click.argument("journal_file", metavar="JOURNAL", type=_FILE)
@_run_options
def replay(journal_file: Path, **opts: Any) -> None:
    """Run a journal's fault schedule again (same faults, targets and times)."""
    from fabric.chaos.journal import read_journal
    from fabric.chaos.runner import Run

    try:
        journal = read_journal(journal_file)
    except ScenarioError as exc:
        raise _fail(str(exc)) from None
    opts.pop("duration")
    run = Run(
        scenario=journal.scenario, scenario_file=journal.scenario_file, seed=journal.seed,
        duration=journal.duration, schedule=journal.schedule, topology=journal.topology,
        control=journal.control,
    )  # fmt: skip
    if opts["journal"] is None or opts["journal"] == journal_file:
        opts["journal"] = journal_file.with_name(f"{journal_file.stem}.replay.json")
    _play(run, Path(journal.scenario_file), **opts)


def _play(
    run: Run,
    scenario_file: Path,
    *,
    service_dir: Path | None,
    embedded: bool,
    config_file: Path | None,
    state_dir: Path | None,
    json_out: Path | None,
    html_out: Path | None,
    journal: Path | None,
    quiet: bool,
) -> None:
    from fabric.chaos.report import render, to_json
    from fabric.client import ClientError

    journal = journal or Path("journal.json")
    run.journal = journal
    if not quiet:
        run.progress = lambda line: click.echo(f"chaos: {line}", err=True)
    if embedded and service_dir is None:
        service_dir, scenario_config = _service_of(run.scenario, scenario_file)
        config_file = config_file or scenario_config
        if service_dir is None:
            raise _fail(f"{scenario_file}: --embedded needs [service] path = ... in the scenario")
    run.progress(f"seed {run.seed}; journal {journal}")
    try:
        report = anyio.run(_main, run, service_dir, config_file, state_dir, backend="trio")
    except (ScenarioError, ClientError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:
        from fabric.model import ModelError
        from fabric.server import FabricBusy

        if isinstance(exc, (ModelError, FabricBusy)):
            raise _fail(str(exc)) from None
        raise
    text = render(report)
    if json_out is not None and str(json_out) == "-":
        sys.stdout.buffer.write(to_json(report))
        click.echo(text, err=True, nl=False)
    else:
        click.echo(text, nl=False)
        if json_out is not None:
            json_out.write_bytes(to_json(report))
    if html_out is not None:
        from fabric.chaos.html import report_html

        html_out.write_text(report_html(report), encoding="utf-8")
    raise click.exceptions.Exit(0 if report.held else 1)


async def _main(run: Run, service_dir: Path | None, config: Path | None, state_dir: Path | None) -> Report:
    from fabric.chaos.runner import run_on

    result: list[Report] = []
    failed: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def play() -> None:
            try:
                if service_dir is not None:
                    from fabric.chaos.embedded import run_embedded

                    result.append(await run_embedded(service_dir, config, state_dir, run))
                else:
                    result.append(await run_on(state_dir or Path(".fabric"), run))
            except Exception as exc:  # raised below, outside the task group, unwrapped
                failed.append(exc)
            tg.cancel_scope.cancel()

        async def signals() -> None:
            with anyio.open_signal_receiver(*STOP_SIGNALS) as received:
                async for signum in received:
                    if signum == signal.SIGHUP:
                        leave_terminal()  # the terminal closed: the report goes to --json only
                    if run.interrupt.is_set():
                        run.progress("stopping now (rollbacks still run)")
                        tg.cancel_scope.cancel()
                        return
                    run.progress("interrupted: ending the method; Ctrl-C again to stop at once")
                    run.interrupt.set()

        tg.start_soon(play)
        tg.start_soon(signals)
    if failed:
        raise failed[0]
    if not result:
        raise ScenarioError("the run was stopped before it made a report; its faults were undone")
    return result[0]


@click.command("plan")
@click.argument("scenario_file", metavar="SCENARIO", type=_FILE)
@click.option("--seed", type=int, required=True, help="The seed of the fault schedule.")
@click.option("--duration", type=float, help="Seconds of method (default: the scenario's).")
@click.option("--topology", help="Role=count,... (default: the scenario's [service] configuration).")
@click.option("--json", "as_json", is_flag=True, help="Print the schedule as JSON.")
def plan(scenario_file: Path, seed: int, duration: float | None, topology: str | None, as_json: bool) -> None:
    """Print the fault schedule a scenario and seed give, without running anything."""
    from fabric.chaos.control import plan_control
    from fabric.chaos.schedule import plan as make_plan

    try:
        scenario = load_scenario(scenario_file)
        topo = _topology(scenario, scenario_file, topology)
        schedule = make_plan(scenario, seed, topo, duration)
    except ScenarioError as exc:
        raise _fail(str(exc)) from None
    # The runner's own faults (replica-kill, ...), numbered after the controller's, as a run has them.
    control = plan_control(scenario, seed, len(schedule), duration)
    if as_json:
        click.echo(msgspec.json.encode([*schedule, *control]).decode())
        return
    total = len(schedule) + len(control)
    click.echo(f"{scenario.title}: seed {seed}, {total} faults over {duration or scenario.duration:g} s")
    for item in schedule:
        click.echo(describe(item))
    for planned in control:
        lasting = planned.fault.duration
        click.echo(
            f"  {planned.n:>3}  t={planned.at:7.3f}  {planned.label}"
            + (f"  ({lasting:.2f} s)" if lasting else "")
        )


def describe(item: PlannedFault) -> str:
    """One line of a schedule."""
    fault = item.inject.fault
    lasting = getattr(fault, "duration", None)
    return f"  {item.n:>3}  t={item.at:7.3f}  {item.inject.label}" + (
        f"  ({lasting:.2f} s)" if lasting else ""
    )


def _topology(scenario: Scenario, scenario_file: Path, text: str | None) -> Topology:
    from fabric.chaos.schedule import Topology

    if text:
        try:
            pairs = (part.split("=") for part in text.split(","))
            return Topology.of({role.strip(): int(count) for role, count in pairs})
        except ValueError:
            raise ScenarioError(f"--topology {text!r}: write Role=count,Role=count") from None
    path, config = _service_of(scenario, scenario_file)
    if path is None:
        raise ScenarioError(f"{scenario_file}: no [service] path: pass --topology Role=count,...")
    from fabric.model import ModelError, load_service

    try:
        service = load_service(path, config)
    except ModelError as exc:
        raise ScenarioError(str(exc)) from None
    return Topology.of({r.name: r.instances for r in service.configuration.roles})
