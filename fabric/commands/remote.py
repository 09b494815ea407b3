"""``fabric exec INSTANCE -- COMMAND...`` runs a command in a role instance, as its role's
account, in its approot, with its environment; ``fabric shell INSTANCE`` opens an interactive
shell there (a pseudo-terminal carried over a WebSocket). The RemoteAccess plugin must be
enabled for the role."""

from __future__ import annotations

import os
import signal
import sys
import termios
import tty
from pathlib import Path

import anyio
import click

from fabric.client import AsyncFabricClient, FabricClient
from fabric.client.deployments import find_instance
from fabric.client.shell import ShellRefused, ShellSession, open_shell
from fabric.commands.client import state_dir_option, user_errors


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("instance")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--service", help="The hosted service (default: the one with INSTANCE).")
@click.option(
    "--slot", type=click.Choice(["production", "staging"]), help="The slot (default: the one with INSTANCE)."
)
@click.option("--timeout", type=click.FloatRange(0, 3600, min_open=True), default=60.0, show_default=True,
              help="Seconds the command may run before its process group is killed.")  # fmt: skip
@state_dir_option
def exec_(
    instance: str,
    command: tuple[str, ...],
    service: str | None,
    slot: str | None,
    timeout: float,
    state_dir: Path,
) -> None:
    """Run COMMAND in role instance INSTANCE and exit with its exit status."""
    with user_errors(), FabricClient(state_dir, timeout=timeout + 60) as client:
        view = client.run(find_instance, instance, service, slot)
        result = client.exec(view.service, view.slot, instance, list(command), timeout=timeout)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    if result.truncated:
        click.echo("fabric exec: the output was cut at 1 MiB per stream", err=True)
    if result.timed_out:
        click.echo(f"fabric exec: the command ran over {timeout:g} s and was killed", err=True)
    raise click.exceptions.Exit(result.exit_status)


@click.command("shell")
@click.argument("instance")
@click.option("--service", help="The hosted service (default: the one with INSTANCE).")
@click.option(
    "--slot", type=click.Choice(["production", "staging"]), help="The slot (default: the one with INSTANCE)."
)
@state_dir_option
def shell(instance: str, service: str | None, slot: str | None, state_dir: Path) -> None:
    """Open an interactive shell in role instance INSTANCE; exit with the shell's exit status."""
    with user_errors(ShellRefused):
        code = anyio.run(_interactive, state_dir, instance, service, slot, backend="trio")
    raise click.exceptions.Exit(code)


async def _interactive(state_dir: Path, instance: str, service: str | None, slot: str | None) -> int:
    """Carry this terminal to the remote shell (raw mode, window sizes) until the shell ends."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    on_tty = os.isatty(stdin)
    rows, cols = _window(stdout if os.isatty(stdout) else stdin)
    async with AsyncFabricClient(state_dir) as client:
        view = await find_instance(client, instance, service, slot)
        async with open_shell(client, view.service, view.slot, instance, rows=rows, cols=cols) as session:
            saved = termios.tcgetattr(stdin) if on_tty else None
            if on_tty:
                tty.setraw(stdin, termios.TCSADRAIN)  # keys typed ahead are kept
            try:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(_keys, session, stdin, on_tty)
                    tasks.start_soon(_window_sizes, session, stdout if os.isatty(stdout) else stdin)
                    while (item := await session.receive()) is not None:
                        if isinstance(item, bytes):
                            await anyio.to_thread.run_sync(_write_all, stdout, item)
                    tasks.cancel_scope.cancel()
            finally:
                if saved is not None:
                    termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    return session.exit_status if session.exit_status is not None else 1


def _window(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return size.lines or 24, size.columns or 80


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


async def _keys(session: ShellSession, fd: int, on_tty: bool) -> None:
    """This terminal's keys (raw: Ctrl-C travels as a byte and interrupts the remote side)."""
    while True:
        if on_tty:
            await anyio.wait_readable(fd)
            data = os.read(fd, 4096)
        else:
            data = await anyio.to_thread.run_sync(os.read, fd, 4096, abandon_on_cancel=True)
        if not data:
            return
        await session.send_keys(data)


async def _window_sizes(session: ShellSession, fd: int) -> None:
    with anyio.open_signal_receiver(signal.SIGWINCH) as resized:
        async for _ in resized:
            await session.resize(*_window(fd))
