"""End-to-end kit: the whole fabric in this process (as `fabric run` has it), real processes below."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil

from actors import command_line
from fabric.client import AsyncFabricClient
from fabric.client.deployments import deploy_service
from fabric.controller.messages import DeploymentView, InstanceView, ListDeployments
from fabric.server import Fabric, open_fabric
from fabric.settings import Settings

SERVICES = Path(__file__).resolve().parent / "services"


def copy_service(
    source: Path, tmp: Path, *, count: int | None = None, replace: dict[str, str] | None = None
) -> Path:
    """A copy of a service folder, with every instance count and some text changed."""
    target = tmp / f"{source.name}-{len(list(tmp.iterdir()))}"
    shutil.copytree(source, target)
    for cscfg in target.glob("ServiceConfiguration.*.cscfg"):
        text = cscfg.read_text()
        if count is not None:
            text = re.sub(r'<Instances count="\d+"', f'<Instances count="{count}"', text)
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        cscfg.write_text(text)
    return target


@dataclass
class Running:
    """A fabric running in this process, and ways to look at it."""

    fabric: Fabric

    @property
    def state_dir(self) -> Path:
        return self.fabric.state_dir

    def client(self) -> AsyncFabricClient:
        return AsyncFabricClient(self.state_dir)

    async def deploy(self, service: Path, **kwargs: Any) -> tuple[str, str]:
        async with self.client() as client:
            started = await deploy_service(client, service, None, **kwargs)
        return started.service, started.slot

    async def call(self, action: Callable[[AsyncFabricClient], Awaitable[Any]]) -> Any:
        """Make a client call; an operation it starts is waited for (and must succeed)."""
        async with self.client() as client:
            result = await action(client)
            if isinstance(result, str) and re.fullmatch(r"[0-9a-f]{32}", result):
                op = await client.wait(result)
                assert op.status == "Succeeded", op
                return op
            return result

    async def views(self) -> list[DeploymentView]:
        views: list[DeploymentView] = await self.fabric.controller.ask(ListDeployments())
        return views

    async def view(self, service: str) -> DeploymentView:
        return next(v for v in await self.views() if v.service == service)

    async def instances(self, service: str) -> list[InstanceView]:
        return sorted((await self.view(service)).instances, key=lambda i: i.id)

    async def wait_until(self, check: Callable[[], Any], seconds: float = 90.0, what: str = "") -> Any:
        """Poll ``check`` (sync or async) until it returns something true, with a deadline."""
        with anyio.fail_after(seconds):
            while True:
                result = check()
                if hasattr(result, "__await__"):
                    result = await result
                if result:
                    return result
                await anyio.sleep(0.05)

    async def all_ready(self, service: str, count: int, seconds: float = 90.0) -> list[InstanceView]:
        async def ready() -> list[InstanceView] | None:
            found = await self.instances(service)
            return found if len(found) == count and all(i.status == "ReadyRole" for i in found) else None

        result: list[InstanceView] = await self.wait_until(ready, seconds)
        return result

    async def public_url(self, service: str) -> str:
        endpoint = (await self.view(service)).endpoints[0]
        return f"http://{endpoint.host}:{endpoint.port}/"


@asynccontextmanager
async def running_fabric(tmp_path: Path, settings: Settings | None = None) -> AsyncIterator[Running]:
    async with open_fabric(tmp_path / "state", settings or Settings.fast()) as fabric:
        yield Running(fabric)


def descendants_named(name: str) -> list[psutil.Process]:
    """Our descendant processes running the actor ``name`` (actors carry it on argv)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if command_line(proc.cmdline())[6:7] == [name]:
                found.append(proc)
        except psutil.Error:
            continue
    return found


async def get(url: str, timeout: float = 2.0) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await client.get(url)


def vm_process(instance: str) -> psutil.Process:
    """The first process of an instance's VM (its actor is named ``vm:<...>.<instance>``)."""
    for proc in psutil.Process().children(recursive=True):
        try:
            name = command_line(proc.cmdline())[6:7]
        except psutil.Error:
            continue
        if name and name[0].startswith("vm:") and name[0].endswith(instance):
            return proc
    raise LookupError(f"no VM process for {instance}")


def role_host_of(instance: str, name: str) -> psutil.Process:
    """The role host process (``WaWorkerHost``, ``WaWebHost``...) of an instance."""
    for proc in vm_process(instance).children(recursive=True):
        try:
            if command_line(proc.cmdline())[6:7] == [name]:
                return proc
        except psutil.Error:
            continue
    raise LookupError(f"no {name} in {instance}")
