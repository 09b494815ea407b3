"""The `fabric` command line: a click group; each concern adds its commands here."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

import fabric

#: every command, by name: "module:attribute", imported only when that command runs (or when
#: ``fabric --help`` lists them all): `fabric status` must not pay for `fabric run`'s fabric
_COMMANDS = {
    "validate": "fabric.commands.model:validate",
    "package": "fabric.commands.model:package",
    "guest": "fabric.commands.guest:guest",
    "run": "fabric.commands.run:run",
    "serve": "fabric.commands.run:serve",
    "chaos": "fabric.commands.chaos:chaos",  # with `replica` and `database` (fabric.commands.chaos_replicas)
    "events": "fabric.commands.events:events",  # the timeline
    "portal": "fabric.commands.portal:portal",  # open the portal
    "cert": "fabric.commands.certs:cert",  # service certificates
    "exec": "fabric.commands.remote:exec_",  # a command in an instance
    "shell": "fabric.commands.remote:shell",  # a shell in an instance
    "token": "fabric.commands.hosts:token",  # bootstrap tokens
    "host": "fabric.commands.hosts:host",  # `fabric host join|cordon|uncordon|drain`
    "hosts": "fabric.commands.hosts:hosts",  # every host and its state
    "trust": "fabric.commands.trust:trust",  # pin the cluster CA for the API's HTTPS
    "deploy": "fabric.commands.client:deploy",
    "status": "fabric.commands.client:status",
    "config": "fabric.commands.client:config",
    "upgrade": "fabric.commands.client:upgrade",
    "walk": "fabric.commands.client:walk",
    "suspend": "fabric.commands.client:suspend",
    "resume": "fabric.commands.client:resume",
    "reboot": "fabric.commands.client:reboot",
    "reimage": "fabric.commands.client:reimage",
    "delete": "fabric.commands.client:delete",
    "swap": "fabric.commands.client:swap",
    "logs": "fabric.commands.client:logs",
}


class _Fabric(click.Group):
    """The group, with one error style for every mistake, click's own included: one line,
    ``error: ...`` on stderr, exit code 2 (click prints the usage and ``Error:`` instead).
    Its commands are loaded by name (click's lazy subcommands), see _COMMANDS."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, without importing any."""
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, its module imported now."""
        if cmd_name in self.commands or cmd_name not in _COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = _COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{_COMMANDS[cmd_name]} is not a click command")
        self.add_command(command, cmd_name)
        return command

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


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: click's own option needs the version when the group is built, and reading
    it (importlib.metadata) would cost every command tens of milliseconds; this reads it on use."""
    if value and not ctx.resilient_parsing:
        click.echo(f"fabric, version {fabric.__version__}")
        ctx.exit()


@click.group(cls=_Fabric, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def main() -> None:
    """Run, supervise and break cloud services the way the Azure fabric did."""


if __name__ == "__main__":  # pragma: no cover - `python -m fabric.cli`
    main()
