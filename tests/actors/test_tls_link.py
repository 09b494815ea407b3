"""Network links between two real processes over mutual TLS: asks and tells both ways, errors
that keep their type, in-flight asks failing on a drop, and reconnection after a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from actors import Actor, ActorDead, ActorError, current_backend, open_system
from tests.actors.tls_certs import CA
from tests.actors.tls_node import FAST, Hang, Note, QuotaRefused, Refuse
from tests.paths import ROOT

pytestmark = [pytest.mark.timeout(90), pytest.mark.anyio, pytest.mark.slow]


class Recorder(Actor):
    """Keeps every message it is asked or told; answers an ask with ``seen: <text>``."""

    def __init__(self, seen: list[Any], arrived: anyio.Event) -> None:
        self.seen = seen
        self.arrived = arrived

    async def receive(self, message: Any) -> Any:
        self.seen.append(message)
        self.arrived.set()
        return f"seen: {message.text}" if isinstance(message, Note) else len(self.seen)


@asynccontextmanager
async def node(mode: str, cert: Path, key: Path, ca: Path, port: int) -> AsyncIterator[anyio.abc.Process]:
    """The other node (tests/actors/tls_node.py) in a child process; ended on the way out."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.actors.tls_node", mode, str(cert), str(key), str(ca), str(port)]
    process = await anyio.open_process(
        [*command, current_backend()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.move_on_after(10, shield=True):
            await process.wait()
        await process.aclose()


async def read_line(process: anyio.abc.Process) -> str:
    """The child's next line of output (within a deadline)."""
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(30):
        while not data.endswith(b"\n"):
            chunk = await process.stdout.receive(1)
            data += chunk
    return data.decode().strip()


async def test_asks_and_tells_cross_both_ways_between_two_processes(tmp_path: Path) -> None:
    ca = CA.make(tmp_path)
    seen: list[Any] = []
    arrived = anyio.Event()
    cert, key = ca.issue("host-1")
    async with open_system() as system:
        system.register("recorder", await system.spawn(lambda: Recorder(seen, arrived), name="recorder"))
        listener = await system.listen("127.0.0.1", 0, tls=ca.server(), name="controller", options=FAST)
        async with node("connect", cert, key, ca.ca_path, listener.address[1]) as child:
            # The child tells our recorder, then asks it: the answer comes back across the link.
            assert await read_line(child) == "answer seen: hello from host-1"
            assert seen == [Note("told by host-1"), Note("hello from host-1")]
            with anyio.fail_after(30):
                peer = await listener.wait_peer("host-1")
            echo = peer.ref("echo")
            assert await echo.ask("ping") == "ping"
            for i in range(500):
                await echo.tell(i)  # in order, ahead of the ask below
            assert await echo.ask(Note("after tells")) == Note("after tells")
            with pytest.raises(ActorError) as caught:
                await echo.ask(Refuse(7))
            refusal = caught.value.caused_by(QuotaRefused)
            assert refusal is not None and refusal.code == 7
            with pytest.raises(ActorDead, match="no actor is registered as 'missing'"):
                await peer.ref("missing").ask("anyone?")


async def test_an_ask_in_flight_fails_on_a_drop_and_the_ref_works_after_the_server_restarts(
    tmp_path: Path,
) -> None:
    ca = CA.make(tmp_path)
    cert, key = ca.issue("controller")
    async with open_system() as system:
        async with node("serve", cert, key, ca.ca_path, 0) as server:
            port = int((await read_line(server)).split()[1])
            peer = await system.connect(
                ("127.0.0.1", port), tls=ca.client("host-1"), name="host-1", options=FAST
            )
            echo = peer.ref("echo")
            assert await echo.ask("first") == "first"
            failed = anyio.Event()
            error: list[BaseException] = []

            async def ask_hanging() -> None:
                try:
                    await echo.ask(Hang(), timeout=60)
                except ActorDead as exc:
                    error.append(exc)
                failed.set()

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(ask_hanging)
                with anyio.fail_after(10):  # until the ask is on the wire (it is never answered)
                    while peer.outbox.buffer or not peer.outbox.pending:
                        await anyio.sleep(0.01)
                server.kill()
                with anyio.fail_after(10):  # ActorDead at the drop, long before the ask's 60 s
                    await failed.wait()
            assert len(error) == 1
        async with node("serve", cert, key, ca.ca_path, port) as again:
            assert await read_line(again) == f"port {port}"
            # The same Ref: the connector links again by itself, and the ask goes then.
            assert await echo.ask("second", timeout=30) == "second"
            assert peer.connected
