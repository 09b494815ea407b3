"""``fabric token`` (bootstrap tokens), ``fabric host join`` (run a host agent on this machine
that joins a controller over the network), ``fabric host cordon|uncordon|drain|remove`` and
``fabric hosts`` (every host, local and joined, and its state)."""

from __future__ import annotations

import datetime
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

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
    """Hosts: join this machine to a controller; cordon, uncordon or drain a host."""


@host.command("join")
@click.argument("address", required=False)
@click.option("--token", "token_", help="A bootstrap token (`fabric token create` on the controller).")
@click.option("--ca-hash", help="The controller's CA public key hash, sha256:<hex>.")
@click.option("--name", help="This host's name (its certificate's); the machine's host name by default.")
@click.option("--fault-domain", type=click.IntRange(0, 1_000_000), default=0, show_default=True)
@click.option("--cores", type=click.IntRange(1, 4096), default=None, help="Cores offered (all by default).")
@click.option(
    "--address",
    "advertise",
    help="The address this host's instances listen on, which the controller's machine connects"
    " to (by default the one this machine reaches the controller from).",
)
@click.option(
    "--state-dir",
    type=_PATH,
    default=Path(".fabric-host"),
    show_default=True,
    help="This host's state folder.",
)
@click.option(
    "--retry-for",
    type=click.FloatRange(0, 3600),
    default=120.0,
    show_default=True,
    help="Seconds a first join tries again while the controller does not answer (connection"
    " refused, reset or timed out), with backoff and jitter, saying so; a refusal ends it at once.",
)
def join(
    address: str | None,
    token_: str | None,
    ca_hash: str | None,
    name: str | None,
    fault_domain: int,
    cores: int | None,
    advertise: str | None,
    state_dir: Path,
    retry_for: float,
) -> None:
    """Join the controller at ADDRESS (its --listen ADDRESS:PORT) and run as its host until Ctrl-C.

    The first time, --token and --ca-hash buy a certificate; from then on (restarts too) the
    certificate in --state-dir is the host's identity, renewed before it expires. ADDRESS may be
    left out then.
    """

    from fabric.cluster.ca import HOST_NAME, CAError
    from fabric.cluster.join import JoinRefused
    from fabric.cluster.node import Identity, default_name, run_host

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    name = (name or default_name()).lower()
    if not HOST_NAME.match(name):
        raise fail(f"--name {name!r} must be 1-63 lower-case letters, digits, dots or dashes")
    identity = Identity(state_dir.absolute())

    if token_ is not None:
        # A command line is readable by every process of this machine (ps, /proc/PID/cmdline),
        # the limited roles of this host's VMs included: join with the token, then run on as
        # this same process without it (exec), before any VM starts.
        with user_errors(JoinRefused, CAError, ValueError):
            anyio.run(
                partial(
                    joined,
                    identity,
                    address,
                    token_,
                    ca_hash,
                    name,
                    cores,
                    fault_domain,
                    advertise,
                    retry_for,
                )
            )
        _exec_without_token()

    async def main() -> None:
        state = await joined(
            identity, address, token_, ca_hash, name, cores, fault_domain, advertise, retry_for
        )
        click.echo(
            f"host {state.name} joined {state.controller}:{state.host_port}; Ctrl-C stops it", err=True
        )
        from fabric.server import until_stop_signal

        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(run_host, identity, state, isolate=True))
            await until_stop_signal()
            tg.cancel_scope.cancel()

    with user_errors(JoinRefused, CAError, ValueError):
        anyio.run(main, backend="trio")


async def joined(
    identity: Any,
    address: str | None,
    token: str | None,
    ca_hash: str | None,
    name: str,
    cores: int | None,
    fault_domain: int,
    advertise: str | None,
    retry_for: float,
) -> Any:
    """Buy this host's certificate with ``token`` (or keep the valid one it has); its JoinState."""
    import os

    from fabric.cluster.ca import check_hash_format
    from fabric.cluster.node import check_address, ensure_joined

    return await ensure_joined(
        identity,
        address,
        token=token,
        ca_hash=check_hash_format(ca_hash) if ca_hash else None,
        name=name,
        cores=cores or os.cpu_count() or 1,
        fault_domain=fault_domain,
        advertise=check_address(advertise) if advertise else "",
        patience=retry_for,
    )


def _exec_without_token() -> None:
    """Run this command again, in this process, with ``--token`` left out of its command line."""
    import os
    import sys

    words, skip = [], False
    for word in sys.orig_argv[1:]:
        if skip:
            skip = False
        elif word == "--token":
            skip = True
        elif not word.startswith("--token="):
            words.append(word)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *words])


@host.command("cordon")
@click.argument("name")
@state_dir_option
def cordon(name: str, state_dir: Path) -> None:
    """Place no new instance on host NAME (what runs there stays; kept over restarts)."""
    with user_errors(), FabricClient(state_dir) as client:
        view = client.cordon(name)
    click.echo(f"host {view.name} is cordoned ({view.instance_count} instance(s) stay there)")


@host.command("uncordon")
@click.argument("name")
@state_dir_option
def uncordon(name: str, state_dir: Path) -> None:
    """Let placement use host NAME again."""
    with user_errors(), FabricClient(state_dir) as client:
        view = client.uncordon(name)
    click.echo(f"host {view.name} takes new instances again ({view.state})")


@host.command("remove")
@click.argument("name")
@state_dir_option
def remove(name: str, state_dir: Path) -> None:
    """Forget joined host NAME and revoke its certificate (drain it first): its link is refused
    from now on, and the name may join again with a token."""
    with user_errors(), FabricClient(state_dir) as client:
        client.remove_host(name)
    click.echo(f"host {name} is removed; its certificate is revoked")


@host.command("drain")
@click.argument("name")
@click.option("--no-wait", is_flag=True, help="Print the request id and return at once.")
@state_dir_option
def drain(name: str, no_wait: bool, state_dir: Path) -> None:
    """Cordon host NAME, then move its instances to other hosts one update domain at a time
    (each domain's instances leave rotation and drain first; the next domain goes once they
    are Ready elsewhere). Refused, with nothing changed, when the other hosts have no room."""
    with user_errors(), FabricClient(state_dir) as client:
        request_id = client.drain(name)
        if no_wait:
            click.echo(f"draining host {name}: accepted, request id {request_id}")
            return
        said = ""
        while True:
            op = client.host_operation(request_id)
            if op.status != "InProgress":
                break
            if op.description != said:
                said = op.description
                click.echo(f"draining host {name}: {said}", err=True)
            time.sleep(0.2)
    if op.status == "Failed":
        raise fail(f"draining host {name} failed: {op.error_message}")
    click.echo(op.description)


def _used(used: int, total: int, unit: str = "") -> str:
    return f"{used}/{total}{unit}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per host.")
@click.option("--pool", help="The machine pool (default: the first).")
@state_dir_option
def hosts(as_json: bool, pool: str | None, state_dir: Path) -> None:
    """List every host, local and joined: name, address, cores and memory (used/total), fault
    domain, heartbeat age, state (Ready, NotReady, Cordoned, Dead), instances."""
    with user_errors(), FabricClient(state_dir) as client:
        found = client.all_hosts(pool)
    if as_json:
        for h in found:
            click.echo(msgspec.json.encode(h).decode())
        return
    click.echo(
        f"{'NAME':<20} {'ADDRESS':<16} {'CORES':>7} {'MEMORY(Mi)':>13} {'FD':>3} {'HEARTBEAT':>9}  "
        f"{'STATE':<9} INSTANCES"
    )
    for h in found:
        age = "-" if h.heartbeat_age is None else f"{h.heartbeat_age:.1f}s"
        click.echo(
            f"{h.name:<20} {h.address:<16} {_used(h.cores_used, h.cores):>7} "
            f"{_used(h.memory_used_mb, h.memory_mb):>13} {h.fault_domain:>3} {age:>9}  {h.state:<9} "
            f"{h.instance_count}"
        )
    if not found:
        click.echo("no host yet (local hosts start with the first deployment; see `fabric token create`)")
