"""An in-process stand-in for a fabric controller: answers the fabric commands from memory.

Deployments get one InstanceView per configured instance; long commands answer an
OperationAccepted and finish at once (``auto_finish``) or when the test calls ``finish``.
Every command that reached it is kept in ``received``, so a test can prove a refused request
never got this far.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import anyio
import msgspec

from actors import Actor
from fabric.controller.messages import (
    ChangeConfiguration,
    ControllerError,
    CreateDeployment,
    DeleteDeployment,
    DeploymentPage,
    DeploymentSummary,
    DeploymentView,
    GetDeployment,
    GetDeploymentPage,
    GetOperation,
    InstanceAction,
    InstanceView,
    ListDeployments,
    OperationAccepted,
    OperationView,
    PublicEndpoint,
    SetDeploymentStatus,
    SummarizeDeployments,
    SwapDeployments,
    UpgradeDeployment,
    WalkUpgradeDomain,
)
from fabric.model.service import parse_configuration


class Finish(msgspec.Struct, frozen=True, kw_only=True):
    """Test -> stand-in: end an InProgress operation."""

    request_id: str
    error_code: str = ""
    error_message: str = ""


class StandInController(Actor):
    """Answers fabric commands like a controller would, without hosts."""

    def __init__(self, *, auto_finish: bool = True, port: int = 20000) -> None:
        self.auto_finish = auto_finish
        self.port = port
        self.deployments: dict[tuple[str, str], DeploymentView] = {}
        self.operations: dict[str, OperationView] = {}
        self.received: list[Any] = []
        #: when set to an Event, deploys and upgrades wait for it (a controller slow to answer)
        self.hold: anyio.Event | None = None

    def _accept(self) -> OperationAccepted:
        rid = uuid.uuid4().hex
        status = "Succeeded" if self.auto_finish else "InProgress"
        self.operations[rid] = OperationView(request_id=rid, status=status)
        return OperationAccepted(request_id=rid)

    def _get(self, service: str, slot: str) -> DeploymentView:
        try:
            return self.deployments[(service, slot)]
        except KeyError:
            raise ControllerError("ResourceNotFound", f"no deployment in {service}/{slot}", 404) from None

    @staticmethod
    def _instances(configuration: bytes, name: str) -> tuple[dict[str, int], list[InstanceView]]:
        parsed, _ = parse_configuration(configuration, name)
        assert parsed is not None
        roles = {r.name: r.instances for r in parsed.roles}
        instances = [
            InstanceView(
                id=f"{role}_IN_{i}", role=role, status="ReadyRole", host="host-0", update_domain=i % 5
            )
            for role, count in roles.items()
            for i in range(count)
        ]
        return roles, instances

    async def receive(self, message: Any) -> Any:
        """Answer one command."""
        if not isinstance(message, Finish):
            self.received.append(message)
        if isinstance(message, CreateDeployment | UpgradeDeployment):
            if self.hold is not None:
                await self.hold.wait()
            if not os.path.isfile(message.package_path):  # as the real controller refuses it
                raise ControllerError("BadRequest", f"package {message.package_path} does not exist")
        match message:
            case Finish(request_id=rid):
                failed = bool(message.error_code)
                self.operations[rid] = OperationView(
                    request_id=rid,
                    status="Failed" if failed else "Succeeded",
                    http_status_code=400 if failed else 200,
                    error_code=message.error_code,
                    error_message=message.error_message,
                )
                return None
            case CreateDeployment():
                if message.name == "boom":
                    raise RuntimeError("a bug in the controller")
                if (message.service, message.slot) in self.deployments:
                    raise ControllerError("ConflictError", "slot is taken", 409)
                roles, instances = self._instances(message.configuration, message.configuration_name)
                self.port += 1
                self.deployments[(message.service, message.slot)] = DeploymentView(
                    service=message.service,
                    slot=message.slot,
                    name=message.name,
                    id=uuid.uuid4().hex,
                    label=message.label,
                    status="Running" if message.start else "Suspended",
                    roles=roles,
                    instances=instances,
                    endpoints=[
                        PublicEndpoint(
                            role="Hello", name="Http", protocol="http", host="127.0.0.1", port=self.port
                        )
                    ],
                )
                return self._accept()
            case GetDeployment():
                return self._get(message.service, message.slot)
            case GetDeploymentPage(limit=limit, after=after):
                view = self._get(message.service, message.slot)
                ids = [i.id for i in view.instances]
                start = ids.index(after) + 1 if after in ids else 0
                chosen = view.instances[start : start + limit]
                more = start + limit < len(ids)
                return DeploymentPage(
                    deployment=msgspec.structs.replace(view, instances=chosen),
                    total=len(ids),
                    next_cursor=chosen[-1].id if more else "",
                )
            case ListDeployments(service=service):
                return [v for v in self.deployments.values() if service in (None, v.service)]
            case SummarizeDeployments(service=service):
                return [
                    DeploymentSummary(
                        service=v.service, slot=v.slot, name=v.name, status=v.status, roles=v.roles
                    )
                    for v in self.deployments.values()
                    if service in (None, v.service)
                ]
            case ChangeConfiguration():
                view = self._get(message.service, message.slot)
                roles, instances = self._instances(message.configuration, message.configuration_name)
                self.deployments[(message.service, message.slot)] = msgspec.structs.replace(
                    view, roles=roles, instances=instances
                )
                return self._accept()
            case UpgradeDeployment():
                view = self._get(message.service, message.slot)
                self.deployments[(message.service, message.slot)] = msgspec.structs.replace(
                    view, label=message.label or view.label
                )
                return self._accept()
            case WalkUpgradeDomain():
                self._get(message.service, message.slot)
                return self._accept()
            case SetDeploymentStatus():
                view = self._get(message.service, message.slot)
                self.deployments[(message.service, message.slot)] = msgspec.structs.replace(
                    view, status=message.status
                )
                return self._accept()
            case InstanceAction():
                view = self._get(message.service, message.slot)
                if not any(i.id == message.instance_id for i in view.instances):
                    raise ControllerError("ResourceNotFound", f"no instance {message.instance_id}", 404)
                return self._accept()
            case DeleteDeployment():
                self._get(message.service, message.slot)
                del self.deployments[(message.service, message.slot)]
                return self._accept()
            case SwapDeployments():
                prod = self.deployments.pop((message.service, "production"), None)
                stage = self.deployments.pop((message.service, "staging"), None)
                if prod is not None:
                    self.deployments[(message.service, "staging")] = msgspec.structs.replace(
                        prod, slot="staging"
                    )
                if stage is not None:
                    self.deployments[(message.service, "production")] = msgspec.structs.replace(
                        stage, slot="production"
                    )
                return self._accept()
            case GetOperation():
                try:
                    return self.operations[message.request_id]
                except KeyError:
                    raise ControllerError("ResourceNotFound", "no such operation", 404) from None
        raise TypeError(f"stand-in does not handle {type(message).__name__}")
