"""The handshake between a plugin agent and its ``/blockStartup`` task, over a Unix socket.

The agent opens the socket only once it has initialised and answers every connection with one
JSON line; the blocking task connects until it gets that line or its deadline passes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

EXIT_NOT_READY = 1
_RETRY = 0.02
#: sun_path holds 108 bytes on Linux, 104 on macOS, the terminating NUL included
_SUN_PATH_ROOM = 100


def parse_args(argv: Sequence[str], description: str) -> tuple[bool, argparse.Namespace, list[str]]:
    """(block_startup, known options, the rest) of an agent's command line."""
    args = list(argv)
    blocking = "/blockStartup" in args
    args = [a for a in args if a != "/blockStartup"]
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--plugin", required=True)
    parser.add_argument("--ready", required=True, help="the Unix socket the agent opens once ready")
    parser.add_argument("--timeout", type=float, default=60.0, help="/blockStartup: seconds to wait")
    parser.add_argument("--store", default="", help="the DiagnosticStore folder")
    options, rest = parser.parse_known_args(args)
    return blocking, options, rest


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address that reaches the Unix socket at ``path`` even when the path is longer than a
    socket address may be (about 100 bytes; a VM's folder can be deep): then through a handle on
    its folder, ``/proc/self/fd/N/name``. Raises OSError when the folder is missing."""
    if len(os.fsencode(path)) < _SUN_PATH_ROOM:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


async def serve_ready(
    path: Path, describe: Callable[[], dict[str, Any]], *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Listen on ``path`` and answer each connection with ``{"ready": true, ...}``."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a socket left by an agent that was killed
    with socket_address(path) as address:
        listener = await anyio.create_unix_listener(address)
    os.chmod(path, 0o600)  # only the bootstrapper's own (elevated) tasks may ask
    task_status.started()

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            line = json.dumps({"ready": True, **describe()}) + "\n"
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(line.encode())

    async with listener:
        await listener.serve(answer)


async def wait_ready(plugin: str, path: Path, timeout: float) -> int:
    """Connect to the agent's socket until it answers; return the exit code of /blockStartup."""
    with anyio.move_on_after(timeout):
        while True:
            try:
                with socket_address(path) as address:
                    stream = await anyio.connect_unix(address)
            except OSError:  # not there yet, or not listening yet
                await anyio.sleep(_RETRY)
                continue
            async with stream:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    data = await stream.receive()
                    if b'"ready": true' in data:
                        print(f"{plugin} agent is ready: {data.decode().strip()}", flush=True)
                        return 0
            await anyio.sleep(_RETRY)
    print(
        f"{plugin} agent did not initialise within {timeout:g} s (no answer on {path}); "
        "see the agent's startup task log",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_NOT_READY


def run_agent(
    argv: Sequence[str] | None,
    description: str,
    agent: Callable[[argparse.Namespace, list[str]], Awaitable[None]],
) -> int:
    """The main of an agent program: /blockStartup waits for the agent, else run the agent."""
    blocking, options, rest = parse_args(sys.argv[1:] if argv is None else argv, description)
    if blocking:
        code: int = anyio.run(wait_ready, options.plugin, Path(options.ready), options.timeout)
        return code
    anyio.run(agent, options, rest)
    return 0
