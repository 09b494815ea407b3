"""Helpers for the controller tests: a small service, a running controller, waiting on views."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

import fabric.network
from actors import Ref, open_system
from fabric.controller import FabricController, ask, wait_operation
from fabric.controller.messages import CreateDeployment, DeploymentView, GetDeployment, OperationView, Slot
from fabric.settings import Settings
from tests.fabric.controller.controller_standin import World

DEFINITION = """
name = "Demo"
upgrade_domain_count = {domains}

[[roles]]
name = "Front"
kind = "worker"
vm_size = "{front_size}"

[[roles.settings]]
name = "Greeting"

[[roles.input_endpoints]]
name = "Http"
protocol = "tcp"
port = {port}

[[roles.internal_endpoints]]
name = "Control"
protocol = "tcp"

[[roles]]
name = "Back"
kind = "worker"
vm_size = "Small"

[[roles.settings]]
name = "Queue"

[[roles.internal_endpoints]]
name = "Gossip"
protocol = "tcp"
"""

CONFIG = """
service_name = "Demo"

[[roles]]
name = "Front"
instances = {front}

[[roles.settings]]
name = "Greeting"
value = "{greeting}"

[[roles]]
name = "Back"
instances = {back}

[[roles.settings]]
name = "Queue"
value = "orders"
"""


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(front: int = 2, back: int = 1, greeting: str = "hello") -> bytes:
    """The Demo service's configuration TOML."""
    return CONFIG.format(front=front, back=back, greeting=greeting).encode()


class ServiceFactory:
    """Writes Demo service folders (a definition, a configuration, role code)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.count = 0

    def __call__(
        self, *, domains: int = 2, front_size: str = "Small", version: str = "v1", port: int | None = None
    ) -> Path:
        self.count += 1
        folder = self.root / f"svc{self.count}"
        for role in ("Front", "Back"):
            (folder / role).mkdir(parents=True)
            (folder / role / "role.py").write_text(f"VERSION = {version!r}\n")
        (folder / "service.toml").write_text(
            DEFINITION.format(domains=domains, front_size=front_size, port=port or self.port)
        )
        (folder / "config.toml").write_bytes(config())
        return folder


def settings(**overrides: Any) -> Settings:
    """Fast settings, with room for the Demo service on two hosts by default."""
    values: dict[str, Any] = {"max_hosts": 4, "host_cores": 4}
    values.update(overrides)
    return Settings.fast(**values)


@asynccontextmanager
async def open_controller(
    state_dir: Path,
    world: World,
    config: Settings | None = None,
    pool: str = "local",
    store_url: str | None = None,
) -> AsyncIterator[Ref]:
    """A running controller with stand-in hosts (its goal state in SQLite, or in the PostgreSQL
    database ``store_url`` names); stopped (hosts too) on exit."""
    async with open_system() as system:
        ref = await system.spawn(
            lambda: FabricController(
                state_dir, config or settings(), pool=pool, host_factory=world.factory(), store_url=store_url
            ),
            name=f"controller:{pool}",
        )
        yield ref


async def create(
    ref: Ref,
    package: Path,
    *,
    slot: Slot = "production",
    name: str = "demo-1",
    service: str = "demo",
    configuration: bytes | None = None,
    start: bool = True,
    timeout: float | None = 60.0,
) -> OperationView:
    """Create a deployment and wait for its operation (``timeout=None`` under the autojump
    clock: staging a package runs in a thread, and virtual time races ahead meanwhile)."""
    accepted = await ask(
        ref,
        CreateDeployment(
            service=service,
            slot=slot,
            name=name,
            package_path=str(package),
            configuration=configuration if configuration is not None else config(),
            configuration_name="config.toml",
            start=start,
        ),
        timeout=timeout,
    )
    return await wait_operation(ref, accepted.request_id, timeout=600)


async def view(ref: Ref, slot: Slot = "production", service: str = "demo") -> DeploymentView:
    """The DeploymentView of a slot."""
    found: DeploymentView = await ask(ref, GetDeployment(service=service, slot=slot))
    return found


async def wait_view(
    ref: Ref,
    check: Callable[[DeploymentView], bool],
    *,
    slot: Slot = "production",
    service: str = "demo",
    timeout: float = 600.0,
) -> DeploymentView:
    """Poll a deployment until ``check`` holds (a deadline, never a bare sleep)."""
    with anyio.fail_after(timeout):
        while True:
            v = await view(ref, slot, service)
            if check(v):
                return v
            await anyio.sleep(0.01)


def all_ready(v: DeploymentView) -> bool:
    """Every instance is ReadyRole."""
    return bool(v.instances) and all(i.status == "ReadyRole" for i in v.instances)


async def settled(ref: Ref) -> None:
    """Wait until the controller handled what it was told before (a reported status) and the
    load balancers' kernel data path (the default as root) follows, a few ms later."""
    await view(ref)
    await fabric.network.synced()


async def change_status(world: World, vm: str, status: str) -> None:
    """Make a stand-in guest report a new status (as its role would)."""
    for host in world.hosts.values():
        if host.alive and vm in host.guests:
            await host._push(vm, status)  # type: ignore[arg-type]
            return
    raise AssertionError(f"no host runs {vm}")


@asynccontextmanager
async def echo_servers(ports: dict[str, int]) -> AsyncIterator[None]:
    """A TCP server on each port that answers its name and closes (an instance's site)."""
    async with anyio.create_task_group() as tg:
        for name, port in ports.items():
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)

            async def handle(stream: Any, name: str = name) -> None:
                async with stream:
                    await stream.send(name.encode())

            tg.start_soon(listener.serve, handle)
        yield
        tg.cancel_scope.cancel()


async def fetch(port: int) -> str:
    """Connect to a port and read what it says until it closes ("" when cut off)."""
    data = b""
    try:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            while True:
                data += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError, OSError):
        pass
    return data.decode()


async def answers(port: int, tries: int = 8) -> set[str]:
    """Who answers on a public port over several connections."""
    return {await fetch(port) for _ in range(tries)}
