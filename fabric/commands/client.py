"""Client commands: drive a running fabric through its HTTP API, found via the state folder.

deploy, status, config, upgrade, walk, suspend, resume, reboot, reimage, delete, swap talk to
the API (fabric.client); logs reads a VM's log files straight from the state folder (it works
after a crash).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.console import Console

from fabric.client import AsyncFabricClient, ClientError, FabricClient
from fabric.client.deployments import (
    Started,
    deploy_service,
    find_instance,
    finish,
    package_source,
    pick_service,
)
from fabric.commands.client_logs import follow_log, list_logs, log_path
from fabric.commands.client_view import progress, render_status, status_json, summary
from fabric.controller.messages import Slot
from fabric.frontend import api
from fabric.model import ModelError, read_configuration

F = TypeVar("F", bound=Callable[..., Any])

_PATH = click.Path(path_type=Path)
_SLOT = click.Choice(["production", "staging"], case_sensitive=False)


def state_dir_option(f: F) -> F:
    """``--state-dir DIR``: the fabric's state folder (default ``.fabric``)."""
    return click.option(
        "--state-dir",
        type=_PATH,
        default=Path(".fabric"),
        show_default=True,
        help="The state folder of the running fabric.",
    )(f)


def _target_options(f: F) -> F:
    f = click.option(
        "--slot", type=_SLOT, default="production", show_default=True, help="The deployment slot."
    )(f)
    f = click.option("--service", "service", help="The hosted service (default: the only one).")(f)
    return state_dir_option(f)


def _instance_options(f: F) -> F:
    """``INSTANCE --service --slot``: a role instance, in the deployment that has it by default."""
    f = click.option("--slot", type=_SLOT, help="The slot (default: the one with INSTANCE).")(f)
    f = click.option("--service", "service", help="The hosted service (default: the one with INSTANCE).")(f)
    return click.argument("instance")(f)


def _wait_option(f: F) -> F:
    return click.option(
        "--no-wait", is_flag=True, help="Return once accepted; do not wait for the operation."
    )(f)


def fail(message: str) -> click.exceptions.Exit:
    """Print ``error: message`` on stderr; the exit (code 2) to raise."""
    click.echo(f"error: {message}", err=True)
    return click.exceptions.Exit(2)


@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Print a user's error as ``error: ...`` on stderr and exit 2 (a model's problems one per
    line, ``file:line: ...`` as `fabric validate` shows them); ``kinds`` are more exception
    classes whose message is for the user."""
    try:
        yield
    except ModelError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise click.exceptions.Exit(2) from None
    except Exception as exc:
        if isinstance(exc, (ClientError, *kinds)):
            raise fail(str(exc)) from None
        raise


def _console() -> Console:
    # Piped or redirected, a table row stays on one line whatever its length (no wrap at 80).
    width = None if sys.stdout.isatty() else 10_000
    return Console(highlight=False, soft_wrap=True, width=width)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


def _finish(client: FabricClient, started: Started, no_wait: bool, show: bool = True) -> None:
    """Wait for an operation with a progress line; print its outcome (the deployment's summary
    when ``show``); exit 2 when it failed."""
    if no_wait:
        click.echo(f"{started.title}: accepted, request id {started.request_id}")
        return
    with progress(_err_console(), started.title) as update:

        async def wait(aio: AsyncFabricClient) -> None:
            async def on_poll(op: api.Operation) -> None:
                try:
                    update(
                        summary(await aio.deployment(started.service, started.slot)) if show else op.status
                    )
                except ClientError:
                    update(op.status)

            await finish(aio, started.request_id, started.title, on_poll=on_poll)

        try:
            client.run(wait)
        except KeyboardInterrupt:
            click.echo(f"stopped waiting; the operation goes on (request id {started.request_id})", err=True)
            raise click.exceptions.Exit(130) from None
    if show:
        try:
            click.echo(summary(client.deployment(started.service, started.slot)))
            return
        except ClientError:
            pass  # the deployment is gone (a delete): say the operation succeeded
    click.echo(f"{started.title}: done")


# -- commands --------------------------------------------------------------------------------------


@click.command()
@click.argument("source", metavar="SERVICE", type=_PATH)
@click.option("--config", "config_file", type=_PATH, help="The .cscfg or configuration TOML to deploy with.")
@click.option("--slot", type=_SLOT, default="production", show_default=True)
@click.option("--name", help="The deployment name (default: the hosted service and a timestamp).")
@click.option("--label", default="", help="The deployment label.")
@click.option(
    "--service", "service", help="The hosted service (default: from the definition; created if missing)."
)
@click.option("--location", help="The location of a new hosted service.")
@click.option("--affinity-group", help="The affinity group of a new hosted service.")
@click.option("--suspended", is_flag=True, help="Deploy without starting the instances.")
@_wait_option
@state_dir_option
def deploy(
    source: Path,
    config_file: Path | None,
    slot: str,
    name: str | None,
    label: str,
    service: str | None,
    location: str | None,
    affinity_group: str | None,
    suspended: bool,
    no_wait: bool,
    state_dir: Path,
) -> None:
    """Deploy SERVICE (a folder, packed first, or a .cspkg) to a running fabric."""
    with user_errors(), FabricClient(state_dir) as client:
        started = client.run(
            deploy_service, source, config_file, slot=cast(Slot, slot.lower()), name=name, label=label,
            service=service, location=location, affinity_group=affinity_group, start=not suspended,
            wait=False,
        )  # fmt: skip
        _finish(client, started, no_wait)


@click.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print the stable machine-readable view (every instance)."
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000_000),
    default=None,
    help="Show at most N instances of each deployment (the first by role and index).",
)
@state_dir_option
def status(as_json: bool, limit: int | None, state_dir: Path) -> None:
    """Show every deployment: instances (status, host, domains, restarts) and public endpoints.

    Large deployments are read page by page; --limit shows the first N instances of each."""
    if as_json and limit is not None:
        raise click.UsageError("--json prints every instance; --limit is for the table")
    with user_errors(), FabricClient(state_dir) as client:
        pages = client.deployment_pages(limit=limit)
        deployments = [p.deployment for p in pages]
        if as_json:
            click.echo(status_json(deployments))
        else:
            render_status(
                _console(), deployments, {(p.deployment.service, p.deployment.slot): p.total for p in pages}
            )


@click.command()
@click.argument("config_file", metavar="CSCFG", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--mode", type=click.Choice(["Auto", "Manual", "Simultaneous"]), default="Auto", show_default=True
)
@_wait_option
@_target_options
def config(
    config_file: Path, mode: str, no_wait: bool, service: str | None, slot: str, state_dir: Path
) -> None:
    """Apply a new configuration (settings raise changing/changed; instance counts scale).

    The hosted service is the one named by --service, else the one the file's serviceName
    was deployed as, else the only one.
    """
    with user_errors(), FabricClient(state_dir) as client:
        named = read_configuration(config_file).service_name
        chosen = cast(Slot, slot.lower())
        hosted = client.run(pick_service, service, chosen, definition=named or None)
        rid = client.change_configuration(
            hosted, chosen, config_file.read_bytes(), config_file.name, cast(Any, mode)
        )
        _finish(client, Started(hosted, chosen, rid, f"configure {hosted} {chosen}"), no_wait)


@click.command()
@click.argument("source", metavar="SERVICE_OR_CSPKG", type=_PATH)
@click.option(
    "--mode", type=click.Choice(["Auto", "Manual", "Simultaneous"]), default="Auto", show_default=True
)
@click.option("--config", "config_file", type=_PATH, help="A configuration to upgrade with.")
@_wait_option
@_target_options
def upgrade(
    source: Path,
    mode: str,
    config_file: Path | None,
    no_wait: bool,
    service: str | None,
    slot: str,
    state_dir: Path,
) -> None:
    """Upgrade a deployment to a new package, update domain by update domain."""
    with user_errors(), FabricClient(state_dir) as client:
        upload = package_source(source, config_file)
        chosen = cast(Slot, slot.lower())
        hosted = client.run(pick_service, service, chosen, definition=upload.definition)
        rid = client.upgrade(
            hosted, chosen, upload.package, mode=cast(Any, mode), configuration=upload.configuration,
            configuration_name=upload.configuration_name,
        )  # fmt: skip
        _finish(client, Started(hosted, chosen, rid, f"upgrade {hosted} {chosen} ({mode})"), no_wait)


@click.command()
@click.argument("domain", type=click.IntRange(min=0))
@_wait_option
@_target_options
def walk(domain: int, no_wait: bool, service: str | None, slot: str, state_dir: Path) -> None:
    """In a Manual upgrade, upgrade update domain DOMAIN next."""
    _on_deployment(
        state_dir, service, slot, f"walk update domain {domain} of",
        lambda client, hosted, chosen: client.walk(hosted, chosen, domain), no_wait,
    )  # fmt: skip


def _on_deployment(
    state_dir: Path,
    service: str | None,
    slot: str,
    what: str,
    start: Callable[[FabricClient, str, Slot], str],
    no_wait: bool,
    *,
    show: bool = True,
) -> None:
    """Start an operation (``start`` returns its request id) on the deployment a command means,
    then finish it as _finish does."""
    with user_errors(), FabricClient(state_dir) as client:
        chosen = cast(Slot, slot.lower())
        hosted = client.run(pick_service, service, chosen)
        rid = start(client, hosted, chosen)
        _finish(client, Started(hosted, chosen, rid, f"{what} {hosted} {chosen}"), no_wait, show)


def _status_command(name: str, target: str, doc: str) -> click.Command:
    @_wait_option
    @_target_options
    def command(no_wait: bool, service: str | None, slot: str, state_dir: Path) -> None:
        _on_deployment(
            state_dir, service, slot, name,
            lambda client, hosted, chosen: client.set_status(hosted, chosen, cast(Any, target)), no_wait,
        )  # fmt: skip

    command.__doc__ = doc
    return click.command(name)(command)


suspend = _status_command(
    "suspend", "Suspended", "Stop every instance of a deployment, keeping the deployment."
)
resume = _status_command("resume", "Running", "Start a suspended deployment again.")


def _instance_command(action: str, doc: str) -> click.Command:
    @_instance_options
    @_wait_option
    @state_dir_option
    def command(instance: str, service: str | None, slot: str | None, no_wait: bool, state_dir: Path) -> None:
        with user_errors(), FabricClient(state_dir) as client:
            view = client.run(find_instance, instance, service, slot)
            rid = client.instance_action(view.service, view.slot, instance, action)
            _finish(client, Started(view.service, view.slot, rid, f"{action} {instance}"), no_wait)

    command.__doc__ = doc
    return click.command(action)(command)


reboot = _instance_command("reboot", "Restart the guest OS of role instance INSTANCE.")
reimage = _instance_command("reimage", "Give role instance INSTANCE a fresh disk and start it again.")


@click.command()
@_wait_option
@_target_options
def delete(no_wait: bool, service: str | None, slot: str, state_dir: Path) -> None:
    """Stop every instance of a deployment and delete it."""
    _on_deployment(
        state_dir, service, slot, "delete",
        lambda client, hosted, chosen: client.delete_deployment(hosted, chosen), no_wait, show=False,
    )  # fmt: skip


@click.command()
@click.option("--service", "service", help="The hosted service (default: the only one).")
@_wait_option
@state_dir_option
def swap(service: str | None, no_wait: bool, state_dir: Path) -> None:
    """VIP swap: production and staging exchange their public addresses."""
    with user_errors(), FabricClient(state_dir) as client:
        hosted = client.run(pick_service, service, None)
        rid = client.swap(hosted)
        _finish(client, Started(hosted, "production", rid, f"swap {hosted}"), no_wait)


@click.command()
@_instance_options
@click.option("--file", "which", default="WaAppAgent", show_default=True,
              help="The log's short name (--list shows them): WaAppAgent, WaHostBootstrapper, "
              "WaWorkerHost, WaIISHost, stdout (the role's output), StartupTask0, W3SVC...")  # fmt: skip
@click.option("--list", "list_only", is_flag=True, help="List the VM's logs (short name, size, path).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@state_dir_option
def logs(
    instance: str,
    service: str | None,
    slot: str | None,
    which: str,
    list_only: bool,
    follow: bool,
    state_dir: Path,
) -> None:
    """Print a log file of role instance INSTANCE's VM (read from the state folder).

    INSTANCE is an instance id (Web_IN_0) or a VM folder name; --service and --slot choose
    among deployments that have the same instance id.
    """
    from fabric.commands.remote_logs import follow_remote, list_remote, on_joined_host

    with user_errors():
        joined = on_joined_host(state_dir, instance, service, slot)  # its VM is on that machine
        if joined is not None and list_only:
            for name, where, size in list_remote(state_dir, instance, joined):
                click.echo(f"{name:<22} {size:>10}  {where}")
            return
        if joined is not None:
            echo = lambda t: click.echo(t, nl=False)  # noqa: E731
            follow_remote(state_dir, instance, joined, which, follow=follow, echo=echo)
            return
        if list_only:
            for name, path, size in list_logs(state_dir, instance, service, slot):
                click.echo(f"{name:<22} {size:>10}  {path}")
            return
        path = log_path(state_dir, instance, which, service, slot)
        follow_log(path, follow=follow, echo=lambda text: click.echo(text, nl=False))


#: every client command, for fabric/cli.py
COMMANDS = (deploy, status, config, upgrade, walk, suspend, resume, reboot, reimage, delete, swap, logs)
