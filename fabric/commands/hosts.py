"""``fabric token`` (bootstrap tokens), ``fabric host join`` (run a host agent on this machine
that joins a controller over the network) and ``fabric hosts`` (the joined hosts)."""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path

import anyio
import click
import msgspec

from fabric.client import FabricClient
from fabric.commands.client import fail, state_dir_option, user_errors

_PATH = click.Path(path_type=Path)


def _when(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group()
def token() -> None:
    """Bootstrap tokens: each lets one or more hosts join until it expires or is deleted."""


@token.command("create")
@click.option("--ttl", default="24h", show_default=True, help="How long it is valid: 90s, 15m, 24h, 7d.")
@click.option("--description", default="", help="A note shown by `fabric token list`.")
@state_dir_option
def token_create(ttl: str, description: str, state_dir: Path) -> None:
    """Make a token and print it, then the command that joins a host with it."""
    from fabric.cluster.tokens import parse_ttl

    try:
        seconds = parse_ttl(ttl)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with user_errors(), FabricClient(state_dir) as client:
        made = client.create_token(seconds, description)
    click.echo(made.token)
    click.echo(f"expires {_when(made.expires)}; join a host with:", err=True)
    click.echo(f"  {made.join_command}", err=True)
    if not made.address:
        click.echo("  (this fabric has no host port: run `fabric serve --listen ADDRESS:PORT`)", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per token.")
@state_dir_option
def token_list(as_json: bool, state_dir: Path) -> None:
    """List the tokens not expired yet (their ids, never their secrets)."""
    with user_errors(), FabricClient(state_dir) as client:
        found = client.tokens()
    for t in found:
        click.echo(
            msgspec.json.encode(t).decode()
            if as_json
            else f"{t.id}  expires {_when(t.expires)}  {t.description}"
        )
    if not found and not as_json:
        click.echo("no bootstrap tokens")


@token.command("delete")
@click.argument("token_id")
@state_dir_option
def token_delete(token_id: str, state_dir: Path) -> None:
    """Revoke token TOKEN_ID at once (hosts that joined with it keep their certificates)."""
    with user_errors(), FabricClient(state_dir) as client:
        client.delete_token(token_id)
    click.echo(f"deleted token {token_id.split('.', 1)[0]}")


@click.group()
def host() -> None:
    """This machine as a host of a controller on another machine."""


@host.command("join")
@click.argument("address", required=False)
@click.option("--token", "token_", help="A bootstrap token (`fabric token create` on the controller).")
@click.option("--ca-hash", help="The controller's CA public key hash, sha256:<hex>.")
@click.option("--name", help="This host's name (its certificate's); the machine's host name by default.")
@click.option("--fault-domain", type=click.IntRange(0, 1_000_000), default=0, show_default=True)
@click.option("--cores", type=click.IntRange(1, 4096), default=None, help="Cores offered (all by default).")
@click.option(
    "--state-dir",
    type=_PATH,
    default=Path(".fabric-host"),
    show_default=True,
    help="This host's state folder.",
)
def join(
    address: str | None,
    token_: str | None,
    ca_hash: str | None,
    name: str | None,
    fault_domain: int,
    cores: int | None,
    state_dir: Path,
) -> None:
    """Join the controller at ADDRESS (its --listen ADDRESS:PORT) and run as its host until Ctrl-C.

    The first time, --token and --ca-hash buy a certificate; from then on (restarts too) the
    certificate in --state-dir is the host's identity, renewed before it expires. ADDRESS may be
    left out then.
    """
    import os

    from fabric.cluster.ca import HOST_NAME, CAError, check_hash_format
    from fabric.cluster.join import JoinRefused
    from fabric.cluster.node import Identity, default_name, ensure_joined, run_host

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    name = (name or default_name()).lower()
    if not HOST_NAME.match(name):
        raise fail(f"--name {name!r} must be 1-63 lower-case letters, digits, dots or dashes")
    identity = Identity(state_dir.absolute())

    async def main() -> None:
        state = await ensure_joined(
            identity,
            address,
            token=token_,
            ca_hash=check_hash_format(ca_hash) if ca_hash else None,
            name=name,
            cores=cores or os.cpu_count() or 1,
            fault_domain=fault_domain,
        )
        click.echo(
            f"host {state.name} joined {state.controller}:{state.host_port}; Ctrl-C stops it", err=True
        )
        from fabric.server import until_stop_signal

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_host, identity, state)
            await until_stop_signal()
            tg.cancel_scope.cancel()

    with user_errors(JoinRefused, CAError, ValueError):
        anyio.run(main, backend="trio")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per host.")
@state_dir_option
def hosts(as_json: bool, state_dir: Path) -> None:
    """List the hosts that joined this fabric: name, address, cores, memory, fault domain,
    heartbeat age, state."""
    with user_errors(), FabricClient(state_dir) as client:
        found = client.joined_hosts()
    if as_json:
        for h in found:
            click.echo(msgspec.json.encode(h).decode())
        return
    now = time.time()
    click.echo(f"{'NAME':<20} {'ADDRESS':<16} {'CORES':>5} {'MEMORY':>8} {'FD':>3} {'HEARTBEAT':>9}  STATE")
    for h in found:
        age = f"{now - h.last_seen:.1f}s" if h.last_seen else "-"
        state = "Ready" if h.connected else "NotReady"
        click.echo(
            f"{h.name:<20} {h.address:<16} {h.cores:>5} {h.memory_mb:>6}Mi {h.fault_domain:>3} {age:>9}  {state}"
        )
    if not found:
        click.echo("no host has joined (see `fabric token create`)")
