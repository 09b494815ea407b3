"""`fabric serve` (the fabric alone) and `fabric run SERVICE` (the fabric, a deployment, a live view)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import click
import msgspec
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from fabric.client import AsyncFabricClient
from fabric.client.deployments import delete_and_wait, deploy_service, hosted_name
from fabric.commands.client import state_dir_option, user_errors
from fabric.commands.client_view import endpoint_text, status_renderables, summary
from fabric.controller.messages import DeploymentView, ListDeployments, Slot
from fabric.model import load_service
from fabric.server import FabricBusy, stop_budget, until_stop_signal
from fabric.settings import Settings, SettingsError

_PATH = click.Path(path_type=Path)


def settings_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--settings FILE`` and ``--fast``."""
    f = click.option("--fast", is_flag=True, help="Short timeouts (seconds, not minutes), for demos.")(f)
    return click.option(
        "--settings", "settings_file", type=_PATH, help="A TOML file of settings to override."
    )(f)


def metrics_public_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--metrics-public``: GET /metrics without the token (the rest of the API keeps it)."""
    return click.option(
        "--metrics-public", is_flag=True, help="Serve /metrics without the API token (for a scraper)."
    )(f)


def load_settings(settings_file: Path | None, fast: bool, metrics_public: bool = False) -> Settings:
    """The Azure defaults (or the fast profile), with a settings file on top (and --metrics-public)."""
    settings = Settings.fast() if fast else Settings()
    settings = Settings.load(settings_file, base=settings) if settings_file is not None else settings
    return msgspec.structs.replace(settings, metrics_public=True) if metrics_public else settings


def _store_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from fabric.controller.goal_store import StoreUrlError, check_store_url

    try:
        return check_store_url(value) if value else None
    except StoreUrlError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--store {value!r}: ")) from None


@click.command()
@click.option(
    "--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="The API port (0: any)."
)
@click.option(
    "--store",
    "store_url",
    metavar="postgresql://USER@HOST/DB",
    callback=_store_url,
    help="Keep the goal state in PostgreSQL (default: SQLite in the state folder).",
)
@click.option(
    "--listen",
    metavar="ADDRESS:PORT",
    help="Open the host port here (mutual TLS) and the join port at PORT+1, for hosts on other machines "
    "(a replica may say PORT 0: it holds a free pair from its start).",
)
@click.option(
    "--replica",
    metavar="NAME",
    help="Run as controller replica NAME (needs --store postgresql://...): one replica leads, the "
    "others forward requests to it and take over when it goes. Replicas share the state folder.",
)
@click.option(
    "--https",
    "https",
    is_flag=True,
    help="Serve the API over HTTPS, its certificate from the cluster CA (always, for a replica's "
    "API on a --listen address that is not loopback). Clients trust <state>/cluster/ca.pem, or the "
    "copy in their own state folder as ca.pem.",
)
@settings_options
@metrics_public_option
@state_dir_option
def serve(
    port: int,
    store_url: str | None,
    listen: str | None,
    replica: str | None,
    https: bool,
    settings_file: Path | None,
    fast: bool,
    metrics_public: bool,
    state_dir: Path,
) -> None:
    """Run the fabric (API, controller, local hosts) until Ctrl-C; deploy to it with `fabric deploy`.

    SIGTERM and SIGHUP (the terminal closed) stop it as Ctrl-C does.
    """
    from fabric.cluster.node import split_address
    from fabric.controller.store import StoreError

    with user_errors(SettingsError, FabricBusy, StoreError, ValueError):
        settings = load_settings(settings_file, fast, metrics_public)
        where = split_address(listen, zero=replica is not None) if listen else None
        if replica is not None:
            store_url = _check_replica(replica, store_url)
            try:
                anyio.run(
                    _serve_replica,
                    state_dir,
                    settings,
                    port,
                    store_url,
                    replica,
                    where,
                    https,
                    backend="trio",
                )
            except BaseExceptionGroup as group:  # a refusal at start, from inside the task group
                raise _only_error(group) from None
            return
        anyio.run(_serve, state_dir, settings, port, store_url, where, https, backend="trio")


def _only_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside nested groups (the group itself when there are several)."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner


def _check_replica(name: str, store_url: str | None) -> str:
    import re

    from fabric.replica.run import NAME_PATTERN

    if store_url is None:
        raise click.UsageError(
            "--replica needs --store postgresql://USER@HOST/DB (replicas share the goal state)"
        )
    if not re.match(NAME_PATTERN, name):
        raise click.BadParameter(
            "letters, digits, '.', '_' and '-', at most 63, starting with a letter or digit",
            param_hint="--replica",
        )
    return store_url


async def _serve_replica(
    state_dir: Path,
    settings: Settings,
    port: int,
    store_url: str,
    name: str,
    listen: tuple[str, int] | None,
    https: bool = False,
) -> None:
    from fabric.replica.run import serve_replica  # the whole fabric: only when it is to run

    host = listen[0] if listen else "127.0.0.1"
    say = partial(click.echo, err=True)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(
            partial(
                serve_replica,
                state_dir,
                settings,
                store_url,
                name,
                host=host,
                port=port,
                listen=listen,
                https=https,
                on_change=say,
                stop=stop,
            )
        )
        await until_stop_signal()
        say(f"replica {name} stopping (the last replica stops the local hosts' role instances gracefully)...")
        stop.set()


async def _serve(
    state_dir: Path,
    settings: Settings,
    port: int,
    store_url: str | None = None,
    listen: tuple[str, int] | None = None,
    https: bool = False,
) -> None:
    from fabric.server import open_fabric  # the whole fabric: only when it is to run

    async with open_fabric(
        state_dir, settings, api_port=port, store_url=store_url, listen=listen, api_tls=https
    ) as fabric:
        click.echo(
            f"fabric serving {fabric.url} (state folder {fabric.state_dir}); Ctrl-C stops it", err=True
        )
        click.echo(f"portal {fabric.url}/ (sign in with the token in {fabric.state_dir / 'token'})", err=True)
        if listen is not None:  # what other machines must reach (README: Several machines)
            from fabric.cluster.node import join_address

            address, host_port = listen
            click.echo(
                f"host port {join_address(address, host_port)} (mutual TLS) and join port "
                f"{join_address(address, host_port + 1)}: every host machine must reach both; "
                "`fabric token create` prints the join command",
                err=True,
            )
        await until_stop_signal()
        click.echo("stopping every role instance gracefully...", err=True)


@click.command()
@click.argument("service", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The .cscfg or configuration TOML.",
)
@click.option(
    "--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="The API port (0: any)."
)
@settings_options
@metrics_public_option
@state_dir_option
def run(
    service: Path,
    config_file: Path | None,
    port: int,
    settings_file: Path | None,
    fast: bool,
    metrics_public: bool,
    state_dir: Path,
) -> None:
    """Run the fabric, deploy SERVICE (a folder or .cspkg) and show its instances live.

    Ctrl-C stops the deployment gracefully (StoppingRole, on_stop) and leaves no process behind;
    so do SIGTERM and SIGHUP (the terminal closed).
    """
    with user_errors(SettingsError, FabricBusy):
        settings = load_settings(settings_file, fast, metrics_public)
        # Every problem now, before anything starts.
        hosted = hosted_name(load_service(service, config_file).definition.name)
        anyio.run(
            _run, service, config_file, (hosted, "production"), state_dir, settings, port, backend="trio"
        )


async def _run(
    service: Path,
    config_file: Path | None,
    target: tuple[str, Slot],
    state_dir: Path,
    settings: Settings,
    port: int,
) -> None:
    from fabric.server import open_fabric  # the whole fabric: only when it is to run

    console = Console(soft_wrap=True)  # piped: one line per change, however long
    async with (
        open_fabric(state_dir, settings, api_port=port) as fabric,
        AsyncFabricClient(fabric.state_dir) as client,
    ):
        console.print(
            f"fabric API {fabric.url}; portal {fabric.url}/; state folder {fabric.state_dir}", highlight=False
        )
        try:
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    await until_stop_signal()
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_on_signal)
                await deploy_service(client, service, config_file, service=target[0], replace=True)
                console.print(summary(await client.deployment(*target)), highlight=False)
                await _show(console, fabric.controller, target)
        finally:
            # Stopped by a signal, or the deploy failed: whatever was deployed is deleted.
            with anyio.move_on_after(stop_budget(settings) + 10, shield=True):
                console.print("stopping the deployment (StoppingRole, on_stop)...", highlight=False)
                if any((d.service, d.slot) == target for d in await client.deployments()):
                    await delete_and_wait(client, *target)
                console.print("stopped; no process left behind", highlight=False)


async def _show(console: Console, controller: Any, target: tuple[str, str]) -> None:
    """A live table on a terminal; one line per change elsewhere (logs, tests, pipes)."""
    last: dict[str, str] = {}
    shown_endpoints = False

    async def current() -> list[DeploymentView]:
        views: list[DeploymentView] = await controller.ask(ListDeployments())
        return [v for v in views if (v.service, v.slot) == target]

    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                views = await current()
                live.update(_table(views))
                await anyio.sleep(0.25)
    while True:
        for view in await current():
            for instance in view.instances:
                line = f"{instance.id}: {instance.status}" + (
                    f" ({instance.detail})" if instance.detail else ""
                )
                if last.get(instance.id) != line:
                    last[instance.id] = line
                    console.print(line, highlight=False)
            if (
                view.endpoints
                and not shown_endpoints
                and all(i.status == "ReadyRole" for i in view.instances)
            ):
                shown_endpoints = True
                console.print(summary(view), highlight=False)
                for endpoint in view.endpoints:
                    console.print(f"  endpoint {endpoint_text(endpoint)}", highlight=False)
        await anyio.sleep(0.1)


def _table(views: list[DeploymentView]) -> Group:
    """The live view: the status table of `fabric status`, redrawn in place."""
    return Group(*status_renderables(views), Text("Ctrl-C stops the deployment gracefully", style="dim"))
