"""The slow path of a flow while toxics act on it: a queue and a writer applying them."""

from __future__ import annotations

import math
import random

import anyio

from . import _sock
from ._conn import PUMP_ERRORS, Flow
from .toxics import Bandwidth, Latency, ResetPeer, SlowClose, Timeout, Toxic

# Chunks queued per direction before the reader waits (backpressure): at most 1 MiB.
_QUEUE = 16
# A bandwidth toxic sends a large chunk in slices of this many seconds' worth.
_SLICE_SECONDS = 0.1


class Attached:
    """A toxic as attached to one flow, with that flow's state for it."""

    __slots__ = ("next_free", "spec", "timer", "toxic_id")

    def __init__(self, toxic_id: str, spec: Toxic) -> None:
        self.toxic_id = toxic_id
        self.spec = spec
        self.next_free = 0.0  # bandwidth: when the link is free for the next byte
        self.timer = anyio.CancelScope()  # timeout: the pending close, dropped on detach


def attach(flow: Flow, toxic_id: str, spec: Toxic) -> None:
    """Make ``spec`` act on ``flow`` from its next chunk on (if any is still to come)."""
    if flow.done:
        return
    att = Attached(toxic_id, spec)
    flow.toxics = (*flow.toxics, att)
    conn = flow.conn
    if flow.lane is None:
        flow.lane = Lane(flow)
        conn.tg.start_soon(flow.lane.run)
    if isinstance(spec, Timeout) and spec.timeout > 0:
        conn.tg.start_soon(_close_after, flow, att, spec.timeout / 1000)


def detach(flow: Flow, toxic_id: str) -> None:
    """Stop ``toxic_id`` acting on ``flow``; queued chunks still go out in order."""
    kept = []
    for att in flow.toxics:
        if att.toxic_id == toxic_id:
            att.timer.cancel()
        else:
            kept.append(att)
    flow.toxics = tuple(kept)


async def _close_after(flow: Flow, att: Attached, seconds: float) -> None:
    with att.timer:
        await anyio.sleep(seconds)
        flow.conn.close()


class Lane:
    """Chunks of one flow waiting for their toxics, written out in order by ``run``."""

    __slots__ = ("_flow", "_recv", "_send")

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._send, self._recv = anyio.create_memory_object_stream[tuple[float, bytes | None]](_QUEUE)

    async def put(self, data: bytes | None) -> None:
        """Queue a chunk (None: end of stream), or write it at once if the lane has ended."""
        try:
            await self._send.send((anyio.current_time(), data))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The lane emptied and ended meanwhile, so writing directly keeps the order.
            await _write(self._flow, data)

    async def run(self) -> None:
        """Apply the toxics to each queued chunk in turn until no toxic is left."""
        flow = self._flow
        try:
            while True:
                try:
                    arrived, data = self._recv.receive_nowait()
                except anyio.WouldBlock:
                    if not flow.toxics:
                        return
                    arrived, data = await self._recv.receive()
                if not await _apply(flow, arrived, data) or data is None:
                    return
        finally:
            # Ending here (no await since the last check) hands the flow back to the pump.
            flow.lane = None
            self._recv.close()
            self._send.close()


async def _apply(flow: Flow, arrived: float, data: bytes | None) -> bool:
    """Pass one chunk through the flow's toxics; False once the connection is ending."""
    due = arrived
    rate = math.inf
    shaper: Attached | None = None
    eof_delay = 0.0
    for att in flow.toxics:
        spec = att.spec
        if isinstance(spec, Latency):
            jitter = random.uniform(-spec.jitter, spec.jitter) if spec.jitter else 0.0
            due += max(0.0, spec.latency + jitter) / 1000
        elif isinstance(spec, Bandwidth):
            if spec.rate * 1024 < rate:
                rate, shaper = spec.rate * 1024, att
        elif isinstance(spec, Timeout):
            if data is None:
                flow.conn.close()
                return False
            return True  # the data is dropped
        elif isinstance(spec, ResetPeer):
            await anyio.sleep(spec.timeout / 1000)
            flow.conn.abort()
            return False
        elif isinstance(spec, SlowClose) and data is None:
            eof_delay += spec.delay / 1000
    await anyio.sleep_until(due)
    if data is None:
        await anyio.sleep(eof_delay)
        return await _write(flow, None)
    if shaper is None:
        return await _write(flow, data)
    step = max(1, int(rate * _SLICE_SECONDS))
    for start in range(0, len(data), step):
        piece = data[start : start + step]
        shaper.next_free = max(anyio.current_time(), shaper.next_free) + len(piece) / rate
        await anyio.sleep_until(shaper.next_free)
        if not await _write(flow, piece):
            return False
    return True


async def _write(flow: Flow, data: bytes | None) -> bool:
    try:
        if data is None:
            _sock.shutdown_write(flow.dst)
        else:
            await _sock.send_all(flow.dst, data)
    except PUMP_ERRORS as exc:
        flow.conn.failed(exc)
        return False
    return True
