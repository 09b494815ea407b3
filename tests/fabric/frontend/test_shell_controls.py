"""A remote shell's control messages (window sizes, signals) are checked before they reach the
instance: a malformed one ends the session with a one-line error (status 400), not a traceback
in the fabric's log; sizes are clamped to the largest terminal."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from fabric.frontend import remote
from fabric.guest.plugin_agents.remote_shell import read_frame

pytestmark = [pytest.mark.timeout(30)]

PATH = "/subscriptions/s/services/hostedservices/shop/deploymentslots/production/roleinstances/Web_IN_0/shell"


async def session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, controls: list[str], *, hang_up: bool = False
) -> tuple[list[Any], list[bytes]]:
    """Run a shell WebSocket against a stand-in agent; (what the client got, frames the agent got)."""
    frames: list[bytes] = []
    path = tmp_path / "agent.sock"
    listener = await anyio.create_unix_listener(path)

    async def agent(stream: anyio.abc.SocketStream) -> None:
        incoming = BufferedByteReceiveStream(stream)
        frames.append(await incoming.receive_until(b"\n", 4096))
        await stream.send(b'{"ok": true}\n')
        async with stream:  # closed when the fabric's side ends
            try:
                while True:
                    kind, payload = await read_frame(incoming)
                    frames.append(kind + payload)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                pass

    async def relayed(*args: object) -> anyio.abc.ByteStream:
        return await anyio.connect_unix(path)

    monkeypatch.setattr(remote, "open_relayed", relayed)
    incoming = [{"type": "websocket.connect"}] + [{"type": "websocket.receive", "text": c} for c in controls]
    sent: list[Any] = []
    ended = anyio.Event()

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        if not hang_up:  # the client stays: only the fabric may end the session
            await ended.wait()
        return {"type": "websocket.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            ended.set()

    scope = {"type": "websocket", "path": PATH, "query_string": b"rows=99999&cols=-3", "headers": []}
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, agent)
        with anyio.fail_after(10):
            await remote.shell(cast(Any, None), scope, receive, send, authorized=True)
        tg.cancel_scope.cancel()
    return sent, frames


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "5",
        '{"resize": 5}',
        '{"resize": [1e999, 2]}',
        '{"resize": ["a", 2]}',
        '{"signal": ["INT"]}',
        '{"resize": [NaN, 2]}',
    ],
)
async def test_a_malformed_control_ends_the_shell_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    sent, _ = await session(tmp_path, monkeypatch, ['{"resize": [30, 100]}', bad])
    texts = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send" and "text" in m]
    assert texts[0] == {"ready": True}
    assert texts[-1]["status"] == 400 and "\n" not in texts[-1]["error"], texts
    assert sent[-1]["type"] == "websocket.close"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_sizes_are_clamped_and_good_controls_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, frames = await session(
        tmp_path, monkeypatch, ['{"resize": [30, 100000]}', '{"signal": "INT"}'], hang_up=True
    )
    request = json.loads(frames[0])
    assert (request["rows"], request["cols"]) == (1000, 1)
    assert frames[1:] == [b"r30 1000", b"sINT"]
