"""Testing helpers on the fabric's side: a role harness built from a service's csdef and cscfg,
and a service deployed on a real embedded fabric.

``roles.testing`` runs a role in process but cannot read a service definition (the model lives
here, a layer above); ``role_spec_from_service`` reads it with the fabric's own loader and
builds the RoleEnvironment with the guest's own code, so the role sees what it would see on
its VM. ``open_service`` is what the ``fabric_service`` pytest fixture runs: the embedded
fabric of ``fabric run`` in a temporary state folder, the service deployed and Ready.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from fabric.guest.disk import VmDisk
from fabric.guest.instance import build_environment, instance_endpoints, instance_id
from fabric.guest.standalone import free_ports
from fabric.model.service import load_service
from fabric.settings import Settings
from roles.protocol import InstanceInfo
from roles.testing import RoleSpec

if TYPE_CHECKING:
    from fabric.client import AsyncFabricClient
    from fabric.controller.messages import DeploymentView, InstanceView, Slot
    from fabric.server import Fabric


def role_spec_from_service(
    service: str | os.PathLike[str],
    role: str,
    *,
    root: str | os.PathLike[str],
    index: int = 0,
    config: str | os.PathLike[str] | None = None,
    on_stop_timeout: float | None = None,
) -> RoleSpec:
    """The RoleSpec of instance ``index`` of ``role`` in a service folder (or .csdef / TOML).

    The service is loaded and validated as ``fabric run`` does (the configuration it would
    choose, unless ``config``); the role sees its configuration's settings (and only those
    its definition declares), its LocalStorage as folders under ``root``, its endpoints and
    every instance of every role on free local ports, and its code folder is searched for
    the entry point as its role host would.

    Raises:
        ModelError: the service is not valid (every problem, with file and line).
        ValueError: no such role or instance, or a ProgramEntryPoint role (no RoleEntryPoint to run).
    """
    loaded = load_service(Path(service), Path(config) if config is not None else None, require_code=True)
    names = [r.name for r in loaded.definition.roles]
    if role not in names:
        raise ValueError(f"the service has no role {role!r}; its roles are {', '.join(names)}")
    definition = loaded.definition.role(role)
    count = loaded.instances(role)
    if not 0 <= index < count:
        raise ValueError(
            f"role {role} has {count} instance(s) in the configuration; index {index} is not one"
        )
    entry = definition.runtime.entry_point if definition.runtime is not None else None
    if entry is not None and entry.program is not None:
        raise ValueError(
            f"role {role} runs a program ({entry.program.command_line!r}), not a RoleEntryPoint: "
            "test it with the fabric_service fixture"
        )
    deployment_id = uuid.uuid4().hex
    topology: dict[str, list[InstanceInfo]] = {}
    ports: dict[str, int] = {}
    for other in loaded.definition.roles:
        topology[other.name] = []
        for n in range(loaded.instances(other.name)):
            chosen = free_ports(other)
            if other.name == role and n == index:
                ports = chosen
            topology[other.name].append(
                InstanceInfo(
                    id=instance_id(other.name, n),
                    role_name=other.name,
                    update_domain=n % loaded.definition.upgrade_domain_count,
                    fault_domain=n % 2,
                    endpoints=instance_endpoints(other, chosen),
                )
            )
    disk = VmDisk(Path(root) / instance_id(role, index), deployment_id, role, instance_id(role, index))
    environment = build_environment(
        loaded,
        definition,
        deployment_id=deployment_id,
        index=index,
        disk=disk,
        ports=ports,
        topology=topology,
        update_domain=index % loaded.definition.upgrade_domain_count,
        fault_domain=index % 2,
    )
    for resource in environment.local_resources.values():
        Path(resource.root_path).mkdir(parents=True, exist_ok=True)
    netfx = entry.netfx if entry is not None else None
    return RoleSpec(
        app_root=str(loaded.role_dir(role)),
        entry_module=netfx.module_file if netfx is not None else "",
        kind="worker" if definition.kind == "worker" else "web",
        environment=environment,
        on_stop_timeout=on_stop_timeout if on_stop_timeout is not None else Settings().on_stop_timeout,
    )


# -- a service on a real embedded fabric -----------------------------------------------------------


@dataclass
class DeployedService:
    """A service deployed on an embedded fabric, every instance Ready.

    ``endpoints`` maps ``"Role/Endpoint"`` to the (host, port) of its load balancer (input
    endpoints); ``client`` is the fabric's API client (deployments, operations, and the chaos
    calls: ``inject``, ``faults``, ``undo``, ``targets``); ``fabric`` the running fabric.
    """

    fabric: Fabric
    service: str
    slot: Slot
    client: AsyncFabricClient
    endpoints: dict[str, tuple[str, int]]

    @property
    def chaos(self) -> AsyncFabricClient:
        """The chaos API client (``await service.chaos.inject(Inject(fault=...))``)."""
        return self.client

    @property
    def state_dir(self) -> Path:
        """The fabric's (temporary) state folder: logs under ``vms/<instance>/``."""
        return self.fabric.state_dir

    def address(self, role: str, endpoint: str) -> tuple[str, int]:
        """The (host, port) where the load balancer serves ``role``'s input ``endpoint``."""
        key = f"{role}/{endpoint}"
        if key not in self.endpoints:
            known = ", ".join(sorted(self.endpoints)) or "(none)"
            raise KeyError(f"no input endpoint {key}; the service has {known}")
        return self.endpoints[key]

    def url(self, role: str, endpoint: str, path: str = "/") -> str:
        """``http://host:port/path`` of an input endpoint."""
        host, port = self.address(role, endpoint)
        return f"http://{host}:{port}/{path.lstrip('/')}"

    async def view(self) -> DeploymentView:
        """The deployment as ``fabric status --json`` shows it."""
        from fabric.controller.messages import ListDeployments

        views: list[DeploymentView] = await self.fabric.controller.ask(ListDeployments())
        for view in views:
            if (view.service, view.slot) == (self.service, self.slot):
                return view
        raise LookupError(f"the deployment {self.service}/{self.slot} is gone")

    async def instances(self) -> list[InstanceView]:
        """Every instance (status, host, restarts, endpoints), by id."""
        return sorted((await self.view()).instances, key=lambda i: i.id)

    async def wait_ready(self, timeout: float = 120.0) -> DeploymentView:
        """Wait until every instance is ReadyRole; return the view.

        Raises:
            TimeoutError: not all Ready within ``timeout`` (the message lists each status).
        """
        view = await self.view()
        with anyio.move_on_after(timeout):
            while not (view.instances and all(i.status == "ReadyRole" for i in view.instances)):
                await anyio.sleep(0.05)
                view = await self.view()
            return view
        statuses = ", ".join(
            f"{i.id} {i.status}" + (f" ({i.detail})" if i.detail else "") for i in view.instances
        )
        raise TimeoutError(f"{self.service} not Ready within {timeout:g} s: {statuses}")


@asynccontextmanager
async def open_service(
    service: str | os.PathLike[str],
    *,
    state_dir: str | os.PathLike[str],
    config: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    ready_timeout: float = 120.0,
) -> AsyncIterator[DeployedService]:
    """Run an embedded fabric in ``state_dir`` (the fast profile unless ``settings``), deploy
    ``service`` (a folder or .cspkg) and wait until every instance is Ready.

    On the way out the deployment is deleted gracefully (StoppingRole, on_stop) and the
    fabric stopped; no process is left behind.

    Raises:
        ModelError, ClientError: the service cannot be deployed (the message says why).
        TimeoutError: not every instance was Ready within ``ready_timeout``.
    """
    from fabric.client import AsyncFabricClient
    from fabric.client.deployments import delete_and_wait, deploy_service
    from fabric.server import open_fabric

    # The API client is used here and nowhere else in this module (see DeployedService.client).
    config_file = Path(config) if config is not None else None
    failed: Exception | None = None
    async with (
        open_fabric(Path(state_dir), settings or Settings.fast()) as fabric,
        AsyncFabricClient(fabric.state_dir) as client,
    ):
        try:
            started = await deploy_service(client, Path(service), config_file, replace=True)
            try:
                deployed = DeployedService(
                    fabric=fabric, service=started.service, slot=started.slot, client=client, endpoints={}
                )
                view = await deployed.wait_ready(ready_timeout)
                deployed.endpoints = {f"{e.role}/{e.name}": (e.host, e.port) for e in view.endpoints}
                yield deployed
            finally:
                # Gracefully (StoppingRole, on_stop), as `fabric run` ends; closing the fabric
                # then stops whatever is left.
                with anyio.move_on_after(ready_timeout, shield=True):
                    await delete_and_wait(client, started.service, started.slot)
        except Exception as error:
            # Raised again below, out of the fabric's task groups: the test sees the error
            # itself (pytest.raises works), not an exception group around it.
            failed = error
    if failed is not None:
        raise failed
