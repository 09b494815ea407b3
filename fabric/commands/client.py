"""Client commands: drive a running fabric through its HTTP API, found via the state folder.

deploy, status, config, upgrade, walk, suspend, resume, reboot, reimage, delete, swap talk to
the API; logs reads a VM's log files straight from the state folder (it works after a crash).
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.console import Console

from fabric.commands.client_logs import LOG_FILES, follow_log, log_path
from fabric.commands.client_view import progress, render_status, status_json, summary
from fabric.controller.messages import DeploymentView, Slot
from fabric.frontend.client import ClientError, FabricClient
from fabric.model import ModelError, build_package, read_package

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


def _wait_option(f: F) -> F:
    return click.option(
        "--no-wait", is_flag=True, help="Return once accepted; do not wait for the operation."
    )(f)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print a user's error in one line (model problems one per line) and exit 2."""
    try:
        yield
    except ModelError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise click.exceptions.Exit(2) from None
    except ClientError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


def _pick_service(client: FabricClient, service: str | None, slot: Slot | None) -> str:
    """The hosted service a command means: the one named, or the only plausible one."""
    if service is not None:
        return service.lower()
    hosted = client.hosted_services(detail=True)
    if len(hosted) == 1:
        return hosted[0].service_name
    candidates = [
        h.service_name
        for h in hosted
        if isinstance(h.deployments, list) and any(slot is None or d.slot == slot for d in h.deployments)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if not hosted:
        raise ClientError("there is no hosted service yet: deploy one with `fabric deploy SERVICE`")
    names = ", ".join(h.service_name for h in hosted)
    raise ClientError(f"several hosted services ({names}): pass --service NAME")


def _finish(
    client: FabricClient, request_id: str, title: str, no_wait: bool, show: tuple[str, Slot] | None
) -> None:
    """Wait for an operation with a progress line; print its outcome; exit 2 when it failed."""
    if no_wait:
        click.echo(f"{title}: accepted, request id {request_id}")
        return
    console = _err_console()
    with progress(console, title) as update:

        def on_poll(op: Any) -> None:
            if show is not None:
                try:
                    update(summary(client.deployment(*show)))
                except ClientError:
                    update(op.status)
            else:
                update(op.status)

        try:
            op = client.wait(request_id, on_poll=on_poll)
        except KeyboardInterrupt:
            click.echo(f"stopped waiting; the operation goes on (request id {request_id})", err=True)
            raise click.exceptions.Exit(130) from None
    if op.status == "Failed":
        error = op.error
        detail = f"{error.message} ({error.code})" if error else f"HTTP {op.http_status_code}"
        raise ClientError(f"{title} failed: {detail}")
    if show is not None:
        try:
            click.echo(summary(client.deployment(*show)))
            return
        except ClientError:
            pass  # the deployment is gone (a delete): say the operation succeeded
    click.echo(f"{title}: done")


def _package(source: Path, config: Path | None, tmp: Path) -> tuple[bytes, bytes | None, str, str]:
    """The package bytes to upload, the configuration (None: the package's own) and its name,
    and the service definition's name. Packs a folder first; checks a .cspkg locally."""
    if source.suffix.lower() == ".cspkg" and source.is_file():
        service = read_package(source, config)
        data = source.read_bytes()
        name = service.definition.name
    elif source.exists():
        out = tmp / "service.cspkg"
        manifest = build_package(source, out, config)
        data = out.read_bytes()
        name = manifest.service
        config = None  # build_package packed the chosen configuration
    else:
        raise ClientError(f"{source} does not exist; pass a service folder or a .cspkg")
    if config is None:
        return data, None, "ServiceConfiguration.cscfg", name
    return data, config.read_bytes(), config.name, name


def _hosted_name(definition_name: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", definition_name.lower()).strip("-")[:63]
    return name or "service"


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
    with _user_errors():
        deploy_service(
            source,
            config_file,
            state_dir,
            slot=cast(Slot, slot.lower()),
            name=name,
            label=label,
            service=service,
            location=location,
            affinity_group=affinity_group,
            start=not suspended,
            no_wait=no_wait,
        )


def deploy_service(
    source: Path,
    config_file: Path | None,
    state_dir: Path,
    *,
    slot: Slot = "production",
    name: str | None = None,
    label: str = "",
    service: str | None = None,
    location: str | None = None,
    affinity_group: str | None = None,
    start: bool = True,
    no_wait: bool = False,
    replace: bool = False,
) -> tuple[str, Slot]:
    """Pack (if needed) and deploy a service; wait for the operation unless ``no_wait``.

    With ``replace``, a deployment already in the slot is deleted first. Returns the
    (hosted service, slot) deployed to. Raises ClientError or ModelError.
    """
    with tempfile.TemporaryDirectory(prefix="reddog-deploy-") as tmp:
        package, configuration, configuration_name, definition = _package(source, config_file, Path(tmp))
        hosted = (service or _hosted_name(definition)).lower()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        with FabricClient(state_dir) as client:
            if client.hosted_service(hosted) is None:
                client.create_hosted_service(
                    hosted, label=definition, location=location, affinity_group=affinity_group
                )
            elif replace and any((d.service, d.slot) == (hosted, slot) for d in client.deployments()):
                _finish(
                    client,
                    client.delete_deployment(hosted, slot),
                    f"delete the old {hosted}/{slot}",
                    False,
                    None,
                )
            request_id = client.create_deployment(
                hosted,
                slot,
                name=name or f"{hosted}-{stamp}",
                package=package,
                configuration=configuration,
                configuration_name=configuration_name,
                label=label or definition,
                start=start,
            )
            _finish(client, request_id, f"deploy {hosted} to {slot}", no_wait, (hosted, slot))
    return hosted, slot


def delete_and_wait(state_dir: Path, target: tuple[str, Slot]) -> None:
    """Delete a deployment and wait until its instances are stopped."""
    with FabricClient(state_dir) as client:
        _finish(client, client.delete_deployment(*target), f"delete {target[0]}/{target[1]}", False, None)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the stable machine-readable view.")
@state_dir_option
def status(as_json: bool, state_dir: Path) -> None:
    """Show every deployment: instances (status, host, domains, restarts) and public endpoints."""
    with _user_errors(), FabricClient(state_dir) as client:
        deployments = client.deployments()
        if as_json:
            click.echo(status_json(deployments))
        else:
            render_status(_console(), deployments)


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
    """Apply a new configuration (settings raise changing/changed; instance counts scale)."""
    with _user_errors(), FabricClient(state_dir) as client:
        chosen = cast(Slot, slot.lower())
        hosted = _pick_service(client, service, chosen)
        rid = client.change_configuration(
            hosted, chosen, config_file.read_bytes(), config_file.name, cast(Any, mode)
        )
        _finish(client, rid, f"configure {hosted} {chosen}", no_wait, (hosted, chosen))


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
    with _user_errors(), tempfile.TemporaryDirectory(prefix="reddog-upgrade-") as tmp:
        package, configuration, configuration_name, _ = _package(source, config_file, Path(tmp))
        with FabricClient(state_dir) as client:
            chosen = cast(Slot, slot.lower())
            hosted = _pick_service(client, service, chosen)
            rid = client.upgrade(
                hosted,
                chosen,
                package,
                mode=cast(Any, mode),
                configuration=configuration,
                configuration_name=configuration_name,
            )
            _finish(client, rid, f"upgrade {hosted} {chosen} ({mode})", no_wait, (hosted, chosen))


@click.command()
@click.argument("domain", type=click.IntRange(min=0))
@_wait_option
@_target_options
def walk(domain: int, no_wait: bool, service: str | None, slot: str, state_dir: Path) -> None:
    """In a Manual upgrade, upgrade update domain DOMAIN next."""
    with _user_errors(), FabricClient(state_dir) as client:
        chosen = cast(Slot, slot.lower())
        hosted = _pick_service(client, service, chosen)
        rid = client.walk(hosted, chosen, domain)
        _finish(client, rid, f"walk update domain {domain} of {hosted} {chosen}", no_wait, (hosted, chosen))


def _status_command(name: str, target: str, doc: str) -> click.Command:
    @_wait_option
    @_target_options
    def command(no_wait: bool, service: str | None, slot: str, state_dir: Path) -> None:
        with _user_errors(), FabricClient(state_dir) as client:
            chosen = cast(Slot, slot.lower())
            hosted = _pick_service(client, service, chosen)
            rid = client.set_status(hosted, chosen, target)
            _finish(client, rid, f"{name} {hosted} {chosen}", no_wait, (hosted, chosen))

    command.__doc__ = doc
    return click.command(name)(command)


suspend = _status_command(
    "suspend", "Suspended", "Stop every instance of a deployment, keeping the deployment."
)
resume = _status_command("resume", "Running", "Start a suspended deployment again.")


def _find_instance(
    client: FabricClient, instance: str, service: str | None, slot: str | None
) -> DeploymentView:
    matches = [
        d
        for d in client.deployments()
        if any(i.id == instance for i in d.instances)
        and (service is None or d.service == service.lower())
        and (slot is None or d.slot == slot.lower())
    ]
    if not matches:
        raise ClientError(f"no role instance {instance!r}; `fabric status` lists them")
    if len(matches) > 1:
        raise ClientError(f"role instance {instance!r} is in several deployments: pass --service and --slot")
    return matches[0]


def _instance_command(action: str, doc: str) -> click.Command:
    @click.argument("instance")
    @click.option("--service", "service", help="The hosted service (default: the one with INSTANCE).")
    @click.option("--slot", type=_SLOT, help="The slot (default: the one with INSTANCE).")
    @_wait_option
    @state_dir_option
    def command(instance: str, service: str | None, slot: str | None, no_wait: bool, state_dir: Path) -> None:
        with _user_errors(), FabricClient(state_dir) as client:
            view = _find_instance(client, instance, service, slot)
            rid = client.instance_action(view.service, view.slot, instance, action)
            _finish(client, rid, f"{action} {instance}", no_wait, (view.service, view.slot))

    command.__doc__ = doc
    return click.command(action)(command)


reboot = _instance_command("reboot", "Restart the guest OS of role instance INSTANCE.")
reimage = _instance_command("reimage", "Give role instance INSTANCE a fresh disk and start it again.")


@click.command()
@_wait_option
@_target_options
def delete(no_wait: bool, service: str | None, slot: str, state_dir: Path) -> None:
    """Stop every instance of a deployment and delete it."""
    with _user_errors(), FabricClient(state_dir) as client:
        chosen = cast(Slot, slot.lower())
        hosted = _pick_service(client, service, chosen)
        rid = client.delete_deployment(hosted, chosen)
        _finish(client, rid, f"delete {hosted} {chosen}", no_wait, None)


@click.command()
@click.option("--service", "service", help="The hosted service (default: the only one).")
@_wait_option
@state_dir_option
def swap(service: str | None, no_wait: bool, state_dir: Path) -> None:
    """VIP swap: production and staging exchange their public addresses."""
    with _user_errors(), FabricClient(state_dir) as client:
        hosted = _pick_service(client, service, None)
        rid = client.swap(hosted)
        _finish(client, rid, f"swap {hosted}", no_wait, (hosted, "production"))


@click.command()
@click.argument("instance")
@click.option("--file", "which", type=click.Choice(LOG_FILES), default="WaAppAgent", show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@state_dir_option
def logs(instance: str, which: str, follow: bool, state_dir: Path) -> None:
    """Print a log file of role instance INSTANCE's VM (read from the state folder)."""
    with _user_errors():
        path = log_path(state_dir, instance, which)
        follow_log(path, follow=follow, echo=lambda text: click.echo(text, nl=False))


#: every client command, for fabric/cli.py
COMMANDS = (deploy, status, config, upgrade, walk, suspend, resume, reboot, reimage, delete, swap, logs)
