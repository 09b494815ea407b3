"""Stand-in role instances and clients for the load balancer tests (loopback only)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

from fabric.network import Backend

HOST = "127.0.0.1"


@dataclass
class EchoInstance:
    """A role instance stand-in: greets each connection with its name, then echoes."""

    name: str
    tg: TaskGroup
    port: int = 0
    accepted: int = 0
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    connections: list[SocketStream] = field(default_factory=list)

    async def start(self) -> None:
        """Listen (again, on the same port once it has one)."""
        multi = await anyio.create_tcp_listener(local_host=HOST, local_port=self.port)
        [listener] = multi.listeners
        assert isinstance(listener, anyio.abc.SocketListener)
        self.port = listener.extra(SocketAttribute.local_port)
        self.scope = anyio.CancelScope()
        self.tg.start_soon(self._serve, listener, self.scope)

    def stop(self) -> None:
        """Stop listening, so connects are refused; open connections go on."""
        self.scope.cancel()

    async def stopped(self) -> None:
        """Stop listening and wait until a connect is refused (the listener is closed)."""
        self.stop()
        with anyio.fail_after(5):
            while True:
                try:
                    stream = await anyio.connect_tcp(HOST, self.port)
                except OSError:
                    return
                await stream.aclose()
                await anyio.sleep(0.01)

    def backend(self, *, ready: bool = True, busy: bool = False, probe_port: int | None = None) -> Backend:
        """This instance as the load balancer's pool sees it."""
        return Backend(self.name, HOST, self.port, ready, busy, probe_port)

    async def _serve(self, listener: anyio.abc.SocketListener, scope: anyio.CancelScope) -> None:
        with scope:
            async with listener:
                while True:
                    stream = await listener.accept()
                    self.accepted += 1
                    self.tg.start_soon(self._echo, stream)

    async def _echo(self, stream: SocketStream) -> None:
        self.connections.append(stream)
        async with stream:
            try:
                await stream.send(f"{self.name}\n".encode())
                async for chunk in stream:
                    await stream.send(chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass


@dataclass
class HealthPage:
    """An HTTP server answering every GET with ``status``, as a probe target."""

    tg: TaskGroup
    status: int = 200
    port: int = 0
    hits: int = 0

    async def start(self) -> None:
        multi = await anyio.create_tcp_listener(local_host=HOST)
        [listener] = multi.listeners
        self.port = listener.extra(SocketAttribute.local_port)
        self.tg.start_soon(listener.serve, self._answer)

    async def _answer(self, stream: SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await stream.receive()
            self.hits += 1
            await stream.send(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % self.status)


@dataclass
class UdpEchoInstance:
    """A UDP role instance stand-in: answers each datagram with ``name:`` and the data."""

    name: str
    tg: TaskGroup
    port: int = 0
    received: int = 0
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    async def start(self) -> None:
        sock = await anyio.create_udp_socket(family=socket.AF_INET, local_host=HOST, local_port=self.port)
        self.port = sock.extra(SocketAttribute.local_port)
        self.scope = anyio.CancelScope()
        self.tg.start_soon(self._serve, sock, self.scope)

    def stop(self) -> None:
        self.scope.cancel()

    def backend(self, *, ready: bool = True, busy: bool = False) -> Backend:
        return Backend(self.name, HOST, self.port, ready, busy)

    async def _serve(self, sock: anyio.abc.UDPSocket, scope: anyio.CancelScope) -> None:
        with scope:
            async with sock:
                async for data, (host, port) in sock:
                    self.received += 1
                    await sock.sendto(self.name.encode() + b":" + data, host, port)


class Client:
    """A client connection through the load balancer, reading the instance's greeting."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.instance = ""

    async def readline(self) -> bytes:
        while b"\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += await self.stream.receive()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def echo(self, data: bytes) -> bytes:
        await self.stream.send(data)
        return await self.read_exactly(len(data))

    async def aclose(self) -> None:
        await self.stream.aclose()


@dataclass
class Farm:
    """Starts instances and clients that live as long as the test."""

    tg: TaskGroup
    clients: list[Client] = field(default_factory=list)

    async def instance(self, name: str) -> EchoInstance:
        inst = EchoInstance(name, self.tg)
        await inst.start()
        return inst

    async def instances(self, n: int, prefix: str = "web_IN_") -> list[EchoInstance]:
        return [await self.instance(f"{prefix}{i}") for i in range(n)]

    async def udp_instances(self, n: int) -> list[UdpEchoInstance]:
        instances = []
        for i in range(n):
            inst = UdpEchoInstance(f"dns_IN_{i}", self.tg)
            await inst.start()
            instances.append(inst)
        return instances

    async def health_page(self) -> HealthPage:
        page = HealthPage(self.tg)
        await page.start()
        return page

    async def connect(self, address: tuple[str, int]) -> Client:
        """Connect and read which instance answered."""
        client = Client(await anyio.connect_tcp(*address))
        self.clients.append(client)
        with anyio.fail_after(5):
            client.instance = (await client.readline()).decode()
        return client

    async def who(self, address: tuple[str, int], n: int) -> list[str]:
        """The instance answering each of ``n`` successive connections."""
        names = []
        for _ in range(n):
            client = await self.connect(address)
            names.append(client.instance)
            await client.aclose()
        return names


@pytest.fixture
async def farm() -> AsyncIterator[Farm]:
    async with anyio.create_task_group() as tg:
        f = Farm(tg)
        yield f
        for client in f.clients:
            await client.aclose()
        tg.cancel_scope.cancel()


@pytest.fixture
def farm_class() -> type[Farm]:
    """Farm itself, for tests that run their own event loop (asyncio)."""
    return Farm


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until true, failing the test after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


@pytest.fixture
def until() -> Callable[..., object]:
    """``await until(predicate, timeout=30.0)``: poll until true, or fail the test (generous: a
    loaded machine runs the balancer and its kernel rules late)."""
    return wait_until


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port that another program is listening on."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield sock.getsockname()[1]
