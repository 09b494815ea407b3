"""`fabric shell` in an instance on a joined host: the stream to its RemoteAccess agent, step by
step through the controller (fabric.controller.instance_shell), which relays each over the
host's link; the shell WebSocket (fabric.frontend.remote) uses it as it uses the local socket."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.abc

from fabric.controller.instance_shell import ShellInInstance, ShellRelayed
from fabric.controller.messages import Slot
from fabric.frontend.api import ApiError
from fabric.frontend.ffe import Forward
from fabric.host.messages import MAX_SHELL_CHUNK, ShellChunk, ShellStep

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe

#: how long one read waits on the host for the shell's output (then asks again)
READ_WAIT = 10.0


class RelayedShell(anyio.abc.ByteStream):
    """The byte stream to a joined host's RemoteAccess agent for one shell."""

    def __init__(self, rdfe: Rdfe, pool: str, service: str, slot: Slot, instance: str, session: str) -> None:
        self.rdfe, self.pool, self.session = rdfe, pool, session
        self.where = (service, slot, instance)
        self.ended = False

    async def _step(
        self, op: Literal["open", "send", "read", "eof", "close"], data: bytes = b"", wait: float = 0.0
    ) -> ShellChunk:
        return await step(self.rdfe, self.pool, *self.where, op, self.session, data, wait)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self.ended:
            try:
                chunk = await self._step("read", wait=READ_WAIT)
            except ApiError:  # the host went away, or the session with it
                chunk = ShellChunk(eof=True)
            if chunk.eof:
                self.ended = True
            elif chunk.data:
                return chunk.data
        raise anyio.EndOfStream

    async def send(self, item: bytes) -> None:
        for start in range(0, len(item), MAX_SHELL_CHUNK):
            try:
                ended = (await self._step("send", item[start : start + MAX_SHELL_CHUNK])).eof
            except ApiError:
                ended = True
            if ended:
                raise anyio.BrokenResourceError

    async def send_eof(self) -> None:
        await self._step("eof")

    async def aclose(self) -> None:
        with anyio.move_on_after(30, shield=True), contextlib.suppress(ApiError):
            await self._step("close")


async def step(
    rdfe: Rdfe,
    pool: str,
    service: str,
    slot: Slot,
    instance: str,
    op: Literal["open", "send", "read", "eof", "close"],
    session: str,
    data: bytes = b"",
    wait: float = 0.0,
) -> ShellChunk:
    """One step through the controller (an empty chunk for an instance on a local host)."""
    ask = ShellInInstance(
        service=service,
        slot=slot,
        instance=instance,
        step=ShellStep(instance_id=instance, op=op, session=session, data=data, wait=wait),
    )
    relayed: ShellRelayed = await rdfe.ask_ffe(
        Forward(pool=pool, command=ask, timeout=wait + 40), timeout=wait + 60
    )
    return relayed.chunk if relayed.chunk is not None else ShellChunk()


async def open_relayed(
    rdfe: Rdfe, sub_id: str, service: str, slot: str, instance: str
) -> RelayedShell | None:
    """The shell's stream to the instance's joined host; None for an instance on a local host
    (or no deployment: the local path answers that)."""
    from fabric.frontend.slots import parse_slot

    hosted = rdfe.hosted(rdfe.subscription(sub_id), service)
    if hosted.pool is None:
        return None
    relayed: ShellRelayed = await rdfe.ask_ffe(
        Forward(
            pool=hosted.pool,
            command=ShellInInstance(
                service=hosted.name,
                slot=parse_slot(slot),
                instance=instance,
                step=ShellStep(instance_id=instance, op="open"),
            ),
            timeout=40,
        ),
        timeout=60,
    )
    if relayed.chunk is None:
        return None
    return RelayedShell(
        rdfe, hosted.pool, hosted.name, parse_slot(slot), instance, relayed.chunk.data.decode()
    )
