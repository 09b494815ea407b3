"""The `fabric` command line: a click group; each concern adds its commands here."""

from __future__ import annotations

import click

from fabric import __version__
from fabric.commands import client as client_commands
from fabric.commands.chaos import chaos
from fabric.commands.events import events
from fabric.commands.guest import guest
from fabric.commands.model import package, validate
from fabric.commands.portal import portal
from fabric.commands.run import run, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fabric")
def main() -> None:
    """Run, supervise and break cloud services the way the Azure fabric did."""


main.add_command(validate)
main.add_command(package)
main.add_command(guest)
main.add_command(run)
main.add_command(serve)
main.add_command(chaos)
main.add_command(events)  # fabric.commands.events: the timeline
main.add_command(portal)  # fabric.commands.portal: open the portal
for _command in client_commands.COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover - `python -m fabric.cli`
    main()
