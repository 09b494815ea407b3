"""``fabric portal``: open the management portal of the running fabric in a browser (it is
served by RDFE at ``/`` of the API address; sign in with the token in the state folder)."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from fabric.commands.client import state_dir_option
from fabric.frontend.auth import read_api_url


@click.command()
@click.option("--no-browser", is_flag=True, help="Print the portal's address only.")
@state_dir_option
def portal(no_browser: bool, state_dir: Path) -> None:
    """Open the management portal of the running fabric in a browser."""
    url = read_api_url(state_dir)
    if url is None:
        click.echo(
            f"error: no fabric is running for state folder {state_dir}: start one with `fabric serve` or `fabric run`",
            err=True,
        )
        raise click.exceptions.Exit(2)
    address = f"{url}/"
    click.echo(f"portal {address} (sign in with the token in {state_dir / 'token'})")
    if not no_browser and not webbrowser.open(address):
        click.echo("no browser could be started here: open that address yourself", err=True)
