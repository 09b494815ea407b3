"""``fabric exec INSTANCE -- COMMAND...``: run a command in a role instance, as its role's
account, in its approot, with its environment (the RemoteAccess plugin must be enabled)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fabric.client import FabricClient
from fabric.client.deployments import find_instance
from fabric.commands.client import state_dir_option, user_errors


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("instance")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--service", help="The hosted service (default: the one with INSTANCE).")
@click.option(
    "--slot", type=click.Choice(["production", "staging"]), help="The slot (default: the one with INSTANCE)."
)
@click.option("--timeout", type=click.FloatRange(0, 3600, min_open=True), default=60.0, show_default=True,
              help="Seconds the command may run before its process group is killed.")  # fmt: skip
@state_dir_option
def exec_(
    instance: str,
    command: tuple[str, ...],
    service: str | None,
    slot: str | None,
    timeout: float,
    state_dir: Path,
) -> None:
    """Run COMMAND in role instance INSTANCE and exit with its exit status."""
    with user_errors(), FabricClient(state_dir, timeout=timeout + 60) as client:
        view = client.run(find_instance, instance, service, slot)
        result = client.exec(view.service, view.slot, instance, list(command), timeout=timeout)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    if result.truncated:
        click.echo("fabric exec: the output was cut at 1 MiB per stream", err=True)
    if result.timed_out:
        click.echo(f"fabric exec: the command ran over {timeout:g} s and was killed", err=True)
    raise click.exceptions.Exit(result.exit_status)
