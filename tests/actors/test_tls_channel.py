"""Writes cut short: the TLS channel keeps the socket's contract when the socket takes only part
of its records, and a link's outbox keeps the rest of a frame cut short ahead of control frames."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio
import pytest

from actors import LinkFaults
from actors._link import Outbox
from actors._mailbox import AwaitedReply, new_event
from actors._tls import TLSChannel
from actors._wire import FrameSplitter, Kind, decode_frame
from tests.actors.tls_certs import CA

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


async def test_a_tls_channel_delivers_every_byte_when_the_socket_is_full(tmp_path: Path) -> None:
    ca = CA.make(tmp_path)
    near, far = socket.socketpair()
    near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # full after a few records
    sender = TLSChannel(near, ca.client("near").context(), server_side=False, server_hostname="controller")
    receiver = TLSChannel(far, ca.server().context(), server_side=True)
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(sender.handshake)
        task_group.start_soon(receiver.handshake)
    payload = os.urandom(2 * 1024 * 1024)
    received = bytearray()
    partial_sends = 0

    async def write() -> None:
        nonlocal partial_sends
        for start in range(0, len(payload), 50_000):
            data = memoryview(payload)[start : start + 50_000]
            while data:  # the socket's contract: send the rest next
                try:
                    taken = sender.send(data)
                except BlockingIOError:
                    await anyio.wait_writable(near)
                    continue
                partial_sends += taken < len(data)
                data = data[taken:]
        # Every byte reported taken: no record is left waiting in the channel.

    async def read() -> None:
        while len(received) < len(payload):
            try:
                received.extend(receiver.recv(65536))
            except BlockingIOError:
                await anyio.wait_readable(far)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(read)
            task_group.start_soon(write)
    assert partial_sends > 0  # the case under test happened
    assert bytes(received) == payload
    sender.close()
    receiver.close()


async def test_the_rest_of_a_frame_cut_short_stays_ahead_of_control_frames() -> None:
    outbox = Outbox("peer", LinkFaults())
    outbox._wake = new_event()  # the writer is idle: an ask is written at once, directly
    wire = bytearray()

    def takes_five_bytes(data: bytes | bytearray) -> int:
        wire.extend(data[:5])
        return min(5, len(data))

    outbox.direct_send = takes_five_bytes
    outbox.deliver_nowait("an ask long enough to be cut short", AwaitedReply())
    outbox.control(Kind.PONG, 7, None)  # while the rest of the ask waits for the writer
    outbox._wake = None
    wire += await outbox.take()
    frames = [decode_frame(payload) for payload in FrameSplitter().feed(bytes(wire))]
    assert [(frame.kind, frame.id) for frame in frames] == [(Kind.ASK, 1), (Kind.PONG, 7)]
