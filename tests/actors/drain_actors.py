"""A child actor that tells its parent past the link's flush threshold while an answer of its
goes straight to the socket, before the link's writer task runs (as the event loop may order
them): see test_tell_drained."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from actors import Actor
from actors._link import FLUSH_BYTES, Outbox


class Race(msgspec.Struct, frozen=True, tag=True):
    """Tell the parent ``size`` bytes from a task of its own; answer once that tell waits for
    room, the answer then leaving directly with it while the writer task has not run yet."""

    size: int


class Told(msgspec.Struct, frozen=True, tag=True):
    """Answer how the last Race's tell ended ("told", or its error), once it has."""


class _WakeThenStall:
    """The link's idle writer task woken but not run yet: its wake-up is held (here, until a
    frame of at least FLUSH_BYTES went out by the direct send of an ask or answer)."""

    def __init__(self, outbox: Outbox) -> None:
        assert outbox._wake is not None and outbox.direct_send is not None
        self._outbox = outbox
        self._real = outbox._wake
        self._send = outbox.direct_send
        self.woken = anyio.Event()
        outbox._wake = self  # type: ignore[assignment]
        outbox.direct_send = self._direct_send

    def set(self) -> None:
        self.woken.set()

    def _direct_send(self, data: bytes | bytearray) -> int:
        sent = self._send(data)
        if len(data) >= FLUSH_BYTES:  # (not a pong that went meanwhile)
            self._outbox.direct_send = self._send
            self._real.set()  # the writer runs now
        return sent


class RaceTeller(Actor):
    """Answers Race and Told."""

    def __init__(self) -> None:
        self.told = anyio.Event()
        self.outcome = ""

    async def receive(self, message: Any) -> Any:
        match message:
            case Race(size=size):
                assert self.parent is not None
                outbox = self.parent._target._outbox  # type: ignore[attr-defined]
                with anyio.fail_after(20):
                    while outbox._wake is None:  # what went before may still be on its way
                        await anyio.sleep(0.01)
                stall = _WakeThenStall(outbox)
                self.told = anyio.Event()
                self.start_soon(self._tell, b"x" * size)
                await stall.woken.wait()  # the tell is queued, and waits for room
                return "queued"  # this answer is flushed directly, the tell with it
            case Told():
                await self.told.wait()
                return self.outcome
        return message

    async def _tell(self, payload: bytes) -> None:
        assert self.parent is not None
        try:
            await self.parent.tell(payload)
            self.outcome = "told"
        except Exception as exc:
            self.outcome = repr(exc)
        finally:
            self.told.set()
