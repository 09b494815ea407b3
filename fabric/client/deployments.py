"""What clients do with deployments beyond single API calls: pack and deploy a service folder,
find the hosted service or instance a user means, wait for an operation to end.

Each helper is a coroutine function taking the AsyncFabricClient first; the command line runs
them through FabricClient.run.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from fabric.client.asynchronous import AsyncFabricClient
from fabric.client.errors import ClientError, OperationFailed
from fabric.controller.messages import DeploymentView, Slot
from fabric.frontend import api
from fabric.model import build_package, read_package


@dataclass(frozen=True)
class Upload:
    """A package ready to upload: its bytes, its configuration (None: the package's own) and
    the name of its service definition."""

    package: bytes
    configuration: bytes | None
    configuration_name: str
    definition: str


def package_source(source: Path, config: Path | None) -> Upload:
    """Read a .cspkg (checked locally) or pack a service folder; blocking (file IO).

    Raises:
        ClientError: ``source`` does not exist.
        ModelError: the service or its configuration is wrong.
    """
    if source.suffix.lower() == ".cspkg" and source.is_file():
        name = read_package(source, config).definition.name
        data = source.read_bytes()
    elif source.exists():
        with tempfile.TemporaryDirectory(prefix="reddog-package-") as tmp:
            out = Path(tmp) / "service.cspkg"
            name = build_package(source, out, config).service
            data = out.read_bytes()
        config = None  # build_package packed the chosen configuration
    else:
        raise ClientError(f"{source} does not exist; pass a service folder or a .cspkg")
    if config is None:
        return Upload(data, None, "ServiceConfiguration.cscfg", name)
    return Upload(data, config.read_bytes(), config.name, name)


def hosted_name(definition_name: str) -> str:
    """The hosted service a definition deploys to by default: its name, lower-case, DNS-safe."""
    name = re.sub(r"[^a-z0-9-]+", "-", definition_name.lower()).strip("-")[:63]
    return name or "service"


async def pick_service(
    client: AsyncFabricClient, service: str | None, slot: Slot | None, *, definition: str | None = None
) -> str:
    """The hosted service a command means: the one named; else the one deployed from
    ``definition`` (a configuration's serviceName); else the only plausible one.

    Raises:
        ClientError: there is none, or several and nothing says which.
    """
    if service is not None:
        return service.lower()
    hosted = await client.hosted_services(detail=True)
    if definition is not None:
        # The hosted service a deploy names after the definition, else the one it labelled so.
        if any(h.service_name == hosted_name(definition) for h in hosted):
            return hosted_name(definition)
        labelled = [h.service_name for h in hosted if h.hosted_service_properties.label == definition]
        if len(labelled) == 1:
            return labelled[0]
    if len(hosted) == 1:
        return hosted[0].service_name
    candidates = [
        h.service_name
        for h in hosted
        if isinstance(h.deployments, list) and any(slot is None or d.slot == slot for d in h.deployments)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if not hosted:
        raise ClientError("there is no hosted service yet: deploy one with `fabric deploy SERVICE`")
    names = ", ".join(h.service_name for h in hosted)
    raise ClientError(f"several hosted services ({names}): pass --service NAME")


async def find_instance(
    client: AsyncFabricClient, instance: str, service: str | None, slot: str | None
) -> DeploymentView:
    """The deployment that has role instance ``instance`` (of ``service``/``slot`` when given).

    Raises:
        ClientError: no deployment has it, or several do.
    """
    matches = [
        d
        for d in await client.deployments()
        if any(i.id == instance for i in d.instances)
        and (service is None or d.service == service.lower())
        and (slot is None or d.slot == slot.lower())
    ]
    if not matches:
        raise ClientError(f"no role instance {instance!r}; `fabric status` lists them")
    if len(matches) > 1:
        raise ClientError(f"role instance {instance!r} is in several deployments: pass --service and --slot")
    return matches[0]


async def finish(
    client: AsyncFabricClient,
    request_id: str,
    title: str,
    *,
    on_poll: Callable[[api.Operation], Awaitable[None]] | None = None,
) -> api.Operation:
    """Wait for an operation to end; returns it when it Succeeded.

    Raises:
        OperationFailed: it Failed (the message: ``title failed: why``).
    """
    op = await client.wait(request_id, on_poll=on_poll)
    if op.status == "Failed":
        error = op.error
        detail = f"{error.message} ({error.code})" if error else f"HTTP {op.http_status_code}"
        raise OperationFailed(f"{title} failed: {detail}")
    return op


@dataclass(frozen=True)
class Started:
    """An operation started on a deployment: where, its request id and what it does."""

    service: str
    slot: Slot
    request_id: str
    title: str


def default_name(hosted: str, slot: Slot, now: dt.datetime) -> str:
    """A deployment's name when none is given: the hosted service and the time, and the slot
    when it is staging (names are unique across a hosted service's two slots, and a script
    deploying to both within one second must not be refused the second name)."""
    stamp = now.strftime("%Y%m%d-%H%M%S")
    return f"{hosted}-{stamp}" if slot == "production" else f"{hosted}-{slot}-{stamp}"


async def deploy_service(
    client: AsyncFabricClient,
    source: Path,
    config_file: Path | None,
    *,
    slot: Slot = "production",
    name: str | None = None,
    label: str = "",
    service: str | None = None,
    location: str | None = None,
    affinity_group: str | None = None,
    start: bool = True,
    replace: bool = False,
    wait: bool = True,
) -> Started:
    """Pack (if needed) and deploy a service; with ``wait``, until the operation ends.

    The hosted service (default: named after the definition) is created if missing; with
    ``replace``, a deployment already in the slot is deleted first.

    Raises:
        ClientError, ModelError, OperationFailed.
    """
    upload = await anyio.to_thread.run_sync(package_source, source, config_file)
    hosted = (service or hosted_name(upload.definition)).lower()
    if await client.hosted_service(hosted) is None:
        await client.create_hosted_service(
            hosted, label=upload.definition, location=location, affinity_group=affinity_group
        )
    elif replace and any((d.service, d.slot) == (hosted, slot) for d in await client.deployments()):
        await delete_and_wait(client, hosted, slot)
    request_id = await client.create_deployment(
        hosted, slot, name=name or default_name(hosted, slot, dt.datetime.now(dt.UTC)), package=upload.package,
        configuration=upload.configuration, configuration_name=upload.configuration_name,
        label=label or upload.definition, start=start,
    )  # fmt: skip
    started = Started(hosted, slot, request_id, f"deploy {hosted} to {slot}")
    if wait:
        await finish(client, request_id, started.title)
    return started


async def delete_and_wait(client: AsyncFabricClient, service: str, slot: Slot) -> None:
    """Delete a deployment and wait until its instances are stopped.

    Raises:
        ClientError, OperationFailed.
    """
    await finish(client, await client.delete_deployment(service, slot), f"delete {service}/{slot}")
