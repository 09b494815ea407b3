"""`fabric guest` (hidden): boot one role instance's VM standalone and print its status changes."""

from __future__ import annotations

from pathlib import Path

import anyio
import click

from fabric.model import ModelError, Service, load_service
from fabric.settings import Settings, SettingsError


@click.command(hidden=True)
@click.argument("service", type=click.Path(path_type=Path, exists=True))
@click.option("--role", required=True, help="The role to boot.")
@click.option("--index", default=0, show_default=True, type=click.IntRange(min=0), help="The instance index.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, exists=True),
    help="The .cscfg or configuration TOML.",
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=Path(".fabric"), show_default=True)
@click.option("--fast", is_flag=True, help="Short timeouts, for demos.")
@click.option("--settings", "settings_file", type=click.Path(path_type=Path), help="A TOML file of settings.")
def guest(
    service: Path,
    role: str,
    index: int,
    config_file: Path | None,
    state_dir: Path,
    fast: bool,
    settings_file: Path | None,
) -> None:
    """Boot one VM of SERVICE (a folder, .csdef, .toml or .cspkg) and print its status changes."""
    try:
        settings = Settings.fast() if fast else Settings()
        if settings_file is not None:
            settings = Settings.load(settings_file, base=settings)
        loaded = load_service(service, config_file)
        loaded.definition.role(role)
    except (ModelError, SettingsError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    except KeyError:
        click.echo(f"error: no role named {role!r} in {service}", err=True)
        raise click.exceptions.Exit(2) from None
    if loaded.packaged:
        click.echo(
            "error: run a service folder here; .cspkg packages are deployed with `fabric run`", err=True
        )
        raise click.exceptions.Exit(2)
    anyio.run(_run, loaded, role, index, state_dir.resolve(), settings, backend="trio")


async def _run(service: Service, role: str, index: int, state_dir: Path, settings: Settings) -> None:
    from actors import open_system
    from fabric.guest.standalone import StatusWatcher, boot_vm, describe, guest_config_for, heartbeat
    from fabric.server import until_stop_signal

    config = guest_config_for(service, role, index, state_dir, settings)
    endpoints = config.environment.current_instance.endpoints
    click.echo(f"booting {config.instance_id} in {config.vm_root}")
    async with open_system() as system:
        watcher = await system.spawn(
            lambda: StatusWatcher(lambda s: click.echo(describe(s, endpoints))), name="console"
        )
        vm = await boot_vm(system, config, watcher, settings)
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat, vm, settings, lambda reply: None)

            async def stop_on_signal() -> None:
                await until_stop_signal()
                click.echo("stopping the VM...", err=True)
                tg.cancel_scope.cancel()

            tg.start_soon(stop_on_signal)
            await vm.join()  # the VM ended by itself
            tg.cancel_scope.cancel()
        await vm.stop()
    click.echo(f"{config.instance_id} stopped")
