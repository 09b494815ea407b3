"""The `fabric` command line: a click group; each concern adds its commands here."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from fabric import __version__
from fabric.commands import chaos_replicas
from fabric.commands import client as client_commands
from fabric.commands.certs import cert
from fabric.commands.chaos import chaos
from fabric.commands.events import events
from fabric.commands.guest import guest
from fabric.commands.hosts import host, hosts, token
from fabric.commands.model import package, validate
from fabric.commands.portal import portal
from fabric.commands.remote import exec_, shell
from fabric.commands.run import run, serve


class _Fabric(click.Group):
    """The group, with one error style for every mistake, click's own included: one line,
    ``error: ...`` on stderr, exit code 2 (click prints the usage and ``Error:`` instead)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; in standalone mode, exit with its code."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            message = " ".join(exc.format_message().split())
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                message += f" (see `{exc.ctx.command_path} -h`)"
            click.echo(f"error: {message}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Fabric, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fabric")
def main() -> None:
    """Run, supervise and break cloud services the way the Azure fabric did."""


main.add_command(validate)
main.add_command(package)
main.add_command(guest)
main.add_command(run)
main.add_command(serve)
main.add_command(chaos)
chaos.add_command(chaos_replicas.replica)  # fabric.commands.chaos_replicas: the control plane's faults
chaos.add_command(chaos_replicas.database)
main.add_command(events)  # fabric.commands.events: the timeline
main.add_command(portal)  # fabric.commands.portal: open the portal
main.add_command(cert)  # fabric.commands.certs: service certificates
main.add_command(exec_)  # fabric.commands.remote: a command in an instance
main.add_command(shell)  # fabric.commands.remote: a shell in an instance
main.add_command(token)  # fabric.commands.hosts: bootstrap tokens
main.add_command(host)  # fabric.commands.hosts: `fabric host join|cordon|uncordon|drain`
main.add_command(hosts)  # fabric.commands.hosts: every host and its state
for _command in client_commands.COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover - `python -m fabric.cli`
    main()
