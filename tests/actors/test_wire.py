"""Frames on the wire: the tell fast path writes the frames append_frame writes, and the splitter
finds them whole however the stream is cut."""

from __future__ import annotations

import pytest

from actors._link import LinkFaults, Outbox
from actors._wire import BadFrame, FrameSplitter, Kind, append_frame, decode_frame, decode_value
from tests.actors.sample_actors import Add

pytestmark = [pytest.mark.timeout(30), pytest.mark.anyio]


@pytest.mark.parametrize("to", ["", "recorder"])
async def test_a_tell_is_the_frame_append_frame_writes(to: str) -> None:
    outbox = Outbox("peer", LinkFaults())
    send = outbox.sender(to)
    expected = bytearray()
    for message in (Add(1), "plain", Add(2), {"a": [1, 2]}):
        await send(message, None)
        append_frame(expected, Kind.TELL, 0, message, None, to)
    assert outbox.buffer == expected


def test_frames_cut_anywhere_come_out_whole_and_in_order() -> None:
    wire = bytearray()
    sent = [Add(i) for i in range(20)] + [Add(10**12)]
    for message in sent:
        append_frame(wire, Kind.TELL, 0, message)
    big = bytearray()
    append_frame(big, Kind.TELL, 0, "x" * 300_000)  # arrives in many pieces
    for step in (1, 3, 7, 64, 1000):
        splitter = FrameSplitter()
        stream = bytes(wire + big)
        payloads = [p for i in range(0, len(stream), step) for p in splitter.split(stream[i : i + step])]
        frames = [decode_frame(payload) for payload in payloads]
        assert [decode_value(f.type, f.body) for f in frames[:-1]] == sent
        assert decode_value(frames[-1].type, frames[-1].body) == "x" * 300_000


def test_a_length_past_the_limit_is_a_bad_frame() -> None:
    splitter = FrameSplitter(max_size=1000)
    wire = bytearray()
    append_frame(wire, Kind.TELL, 0, "fine")
    wire += (1001).to_bytes(4, "big")
    frames = splitter.split(bytes(wire))
    assert decode_frame(next(frames)).kind == Kind.TELL
    with pytest.raises(BadFrame, match="exceeds the 1000-byte limit"):
        next(frames)
