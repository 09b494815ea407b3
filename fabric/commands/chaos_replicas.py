"""`fabric chaos replica kill|hang` and `fabric chaos database`: faults on the control plane."""

from __future__ import annotations

from pathlib import Path

import anyio
import click

from fabric.commands.client import state_dir_option, user_errors

_WHICH = click.option(
    "--replica",
    "which",
    default="leader",
    show_default=True,
    help="leader, follower, or a replica's name.",
)


@click.group()
def replica() -> None:
    """Kill or hang a controller replica (`fabric serve --replica`) of this state folder."""


def _run(fn: object, *args: object) -> None:
    from fabric.chaos.replicas import ReplicaFaultError

    with user_errors(ReplicaFaultError):
        click.echo(anyio.run(fn, *args, backend="trio"))  # type: ignore[arg-type]


@replica.command()
@_WHICH
@state_dir_option
def kill(which: str, state_dir: Path) -> None:
    """SIGKILL a replica; another takes over (its local hosts and VMs run on: it adopts them)."""
    from fabric.chaos.replicas import kill_replica

    _run(kill_replica, state_dir, which)


@replica.command()
@_WHICH
@click.option(
    "--duration", type=click.FloatRange(0, 3600, min_open=True), required=True, help="Seconds stopped."
)
@state_dir_option
def hang(which: str, duration: float, state_dir: Path) -> None:
    """SIGSTOP a replica for --duration seconds, then SIGCONT it (past its lease: it is fenced
    and follows)."""
    from fabric.chaos.replicas import hang_replica

    _run(hang_replica, state_dir, which, duration)


@click.command()
@click.option("--stop-command", required=True, help="Stops the database (e.g. 'pg_ctlcluster 16 main stop').")
@click.option("--start-command", required=True, help="Starts it again.")
@click.option(
    "--duration",
    type=click.FloatRange(0, 3600),
    default=0.0,
    show_default=True,
    help="Seconds between stop and start.",
)
def database(stop_command: str, start_command: str, duration: float) -> None:
    """Stop the goal state's database, wait, start it again (a restart under a running fabric)."""
    from fabric.chaos.replicas import database_outage

    _run(database_outage, stop_command, start_command, duration)
