"""`fabric shell` on a joined host: the byte streams to its VMs' RemoteAccess agents, held for
the controller, which relays each step (ShellStep) from the front end over the host's link.
Bounded: 16 open shells, 64 KiB a step; one unread for two minutes is closed."""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

from fabric.guest.plugin_agents._ready import socket_address
from fabric.host.messages import MAX_SHELL_CHUNK, MAX_SHELLS, ShellChunk, ShellStep

#: a shell nobody read for this long is closed (its front end went away)
IDLE = 120.0


@dataclass(eq=False)
class _Shell:
    instance_id: str
    stream: anyio.abc.SocketStream
    used: float = field(default_factory=time.monotonic)
    reading: anyio.Lock = field(default_factory=anyio.Lock)


class ShellRelays:
    """The open shells of one host agent."""

    def __init__(self) -> None:
        self.shells: dict[str, _Shell] = {}

    async def step(self, step: ShellStep, socket_path: Path) -> ShellChunk:
        """Carry out one step (``socket_path``: the VM's agent socket, for ``open``).

        Raises:
            OSError: the agent cannot be reached (``open``: remote access off or not running).
            ValueError: a step out of bounds, or an unknown session.
        """
        if len(step.data) > MAX_SHELL_CHUNK or not 0 <= step.wait <= 30:
            raise ValueError(f"a shell step carries at most {MAX_SHELL_CHUNK} bytes and waits at most 30 s")
        if step.op == "open":
            await self._reap()
            if len(self.shells) >= MAX_SHELLS:
                raise ValueError(f"at most {MAX_SHELLS} shells at once on a host")
            with socket_address(socket_path) as address:
                stream = await anyio.connect_unix(address)
            session = secrets.token_hex(8)
            self.shells[session] = _Shell(step.instance_id, stream)
            if step.data:
                with contextlib.suppress(anyio.BrokenResourceError):  # its answer, if any, says why
                    await stream.send(step.data)
            return ShellChunk(data=session.encode())
        shell = self.shells.get(step.session)
        if shell is None or shell.instance_id != step.instance_id:
            if step.op == "close":
                return ShellChunk(eof=True)
            raise ValueError("no such shell session (it ended)")
        shell.used = time.monotonic()
        try:
            match step.op:
                case "send":
                    await shell.stream.send(step.data)
                case "eof":
                    await shell.stream.send_eof()
                case "read":
                    async with shell.reading:
                        with anyio.move_on_after(step.wait):
                            return ShellChunk(data=await shell.stream.receive(MAX_SHELL_CHUNK))
                case "close":
                    await self._close(step.session)
                    return ShellChunk(eof=True)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await self._close(step.session)
            return ShellChunk(eof=True)
        return ShellChunk()

    async def _close(self, session: str) -> None:
        shell = self.shells.pop(session, None)
        if shell is not None:
            with anyio.CancelScope(shield=True):
                await shell.stream.aclose()

    async def _reap(self) -> None:
        now = time.monotonic()
        for session in [s for s, sh in self.shells.items() if now - sh.used > IDLE]:
            await self._close(session)

    async def aclose(self) -> None:
        """Close every shell (the host agent stops)."""
        for session in list(self.shells):
            await self._close(session)
