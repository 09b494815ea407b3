"""Passive health checks with real instance processes: a refusing instance comes back by itself,
and a killed one costs no client a connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import pytest

from fabric.network import Backend, EndpointSpec, open_load_balancer
from tests.paths import ROOT

pytestmark = pytest.mark.slow

WEB = EndpointSpec("HttpIn", "tcp", 0)
HOST = "127.0.0.1"


@dataclass
class ChildInstance:
    """A role instance in its own process (see instance_child)."""

    name: str
    process: anyio.abc.Process
    port: int = 0
    listening: anyio.Event = field(default_factory=anyio.Event)

    def backend(self) -> Backend:
        return Backend(self.name, HOST, self.port)

    async def listen(self) -> None:
        """Tell a late instance to open its listener, and wait until it has."""
        assert self.process.stdin is not None
        await self.process.stdin.send(b"listen\n")
        with anyio.fail_after(20):
            await self.listening.wait()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)


@asynccontextmanager
async def child_instances(*late: bool) -> AsyncIterator[list[ChildInstance]]:
    """One instance process per flag, named web_IN_<n>: listening at once, or late (when told)."""
    children: list[ChildInstance] = []
    try:
        async with anyio.create_task_group() as tg:
            for n, is_late in enumerate(late):
                command = [sys.executable, "-m", "tests.fabric.network.instance_child", f"web_IN_{n}"]
                process = await anyio.open_process(
                    command + (["--late"] if is_late else []), cwd=ROOT, stderr=subprocess.DEVNULL
                )
                child = ChildInstance(f"web_IN_{n}", process)
                children.append(child)
                bound = anyio.Event()
                tg.start_soon(_read_lines, child, bound)
                with anyio.fail_after(20):
                    await bound.wait()
                    if not is_late:
                        await child.listening.wait()
            yield children
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for child in children:
                if child.process.returncode is None:
                    child.process.kill()
                await child.process.wait()
                await child.process.aclose()


async def _read_lines(child: ChildInstance, bound: anyio.Event) -> None:
    assert child.process.stdout is not None
    buffer = b""
    async for chunk in child.process.stdout:
        buffer += chunk
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            if line.startswith(b"bound "):
                child.port = int(line.split()[1])
                bound.set()
            elif line == b"listening":
                child.listening.set()


async def greeting(address: tuple[str, int]) -> str:
    """Which instance answers a fresh connection; raises if the connection fails."""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(*address) as stream:
            data = b""
            while not data.endswith(b"\n"):
                data += await stream.receive()
            return data.decode().strip()


async def test_an_instance_listening_1_s_after_ready_gets_its_share_within_2_s() -> None:
    async with (
        child_instances(False, True) as (early, late),
        open_load_balancer(WEB, [early.backend(), late.backend()]) as lb,
    ):
        ready = anyio.current_time()
        # For a second the late one refuses: every connection is served, by the other one.
        served = []
        while anyio.current_time() < ready + 1.0:
            served.append(await greeting(lb.address))
            await anyio.sleep(0.02)
        assert set(served) == {"web_IN_0"}
        assert lb.refusing() == ["web_IN_1"]
        assert [b.refusing for b in lb.stats().backends] == [False, True]
        await late.listen()
        with anyio.fail_after(30):
            while "web_IN_1" not in lb.rotation():
                await greeting(lb.address)
                await anyio.sleep(0.02)
            await lb.synced()  # the kernel data path's rules follow the rotation
        assert Counter([await greeting(lb.address) for _ in range(10)]) == {"web_IN_0": 5, "web_IN_1": 5}
        assert lb.refusing() == [] and lb.stats().rejected == 0


async def test_when_one_of_two_instances_is_sigkilled_no_connection_fails() -> None:
    # web_IN_1 refused the first connections (it listens late), so it is still marked refusing
    # when web_IN_0, which took all the traffic meanwhile, dies: it must be tried anyway at once.
    async with (
        child_instances(False, True) as (first, second),
        open_load_balancer(WEB, [first.backend(), second.backend()]) as lb,
    ):
        served = [await greeting(lb.address) for _ in range(4)]
        assert set(served) == {"web_IN_0"} and lb.refusing() == ["web_IN_1"]
        await second.listen()
        first.kill()
        await first.process.wait()
        served = [await greeting(lb.address) for _ in range(25)]
        assert set(served) == {"web_IN_1"}
        assert lb.stats().rejected == 0
        assert lb.refusing() == ["web_IN_0"] and lb.rotation() == ["web_IN_1"]


async def test_a_client_waits_for_an_instance_to_enter_an_empty_rotation() -> None:
    async with (
        child_instances(False) as (child,),
        open_load_balancer(WEB, [Backend("web_IN_0", HOST, child.port, ready=False)]) as lb,
    ):
        async with anyio.create_task_group() as tg:
            answers: list[str] = []

            async def connect() -> None:
                answers.append(await greeting(lb.address))

            tg.start_soon(connect)
            with anyio.fail_after(10):
                while lb.stats().connections < 1:
                    await anyio.sleep(0.01)
            # Accepted, and waiting: the instance is still starting.
            assert answers == []
            lb.update("web_IN_0", ready=True)
        assert answers == ["web_IN_0"] and lb.stats().rejected == 0


async def test_a_client_is_reset_after_the_queue_timeout_when_no_instance_comes() -> None:
    spec = EndpointSpec("HttpIn", "tcp", 0)
    async with open_load_balancer(spec, [Backend("web_IN_0", HOST, 1, ready=False)], queue_timeout=0.2) as lb:
        started = anyio.current_time()
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
            await greeting(lb.address)
        assert anyio.current_time() - started >= 0.2
        assert lb.stats().rejected == 1
