"""A client of the fabric's HTTP API, found through its state folder (what the CLI uses).

``<state>/api`` holds the URL and ``<state>/token`` the token of the running fabric; every
call raises a ClientError subclass with a one-line message for anything a user can fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from fabric.controller.messages import DeploymentView, Slot, UpgradeMode
from fabric.frontend import api
from fabric.frontend.auth import read_api_url, read_token

T = TypeVar("T")

#: the Service Management API version this client speaks (informative: the API takes any)
API_VERSION = "2014-06-01"


class ClientError(Exception):
    """A call that failed for a reason the user can act on; the message is one line."""


class NoFabricRunning(ClientError):
    """No fabric answers for the state folder (no ``api`` file, or nothing listens there)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        super().__init__(
            f"no fabric is running for state folder {state_dir}: start one with `fabric serve` or `fabric run`"
        )


class ApiRefused(ClientError):
    """The API answered with an error; ``status`` and ``code`` say which."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message


class FabricClient:
    """A synchronous client of one running fabric.

    Args:
        state_dir: the fabric's state folder.
        timeout: seconds a single HTTP call may take.

    Raises:
        NoFabricRunning: the state folder has no ``api`` or ``token`` file.
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, timeout: float = 120.0) -> None:
        self.state_dir = Path(state_dir)
        url = read_api_url(self.state_dir)
        token = read_token(self.state_dir)
        if url is None or token is None:
            raise NoFabricRunning(self.state_dir)
        self.url = url
        self._http = httpx.Client(
            base_url=url,
            headers={"authorization": f"Bearer {token}", "x-ms-version": API_VERSION},
            timeout=timeout,
        )
        self._subscription: str | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> FabricClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: msgspec.Struct | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One API call; returns the 2xx response.

        Raises:
            NoFabricRunning: nothing listens at the URL in ``<state>/api``.
            ApiRefused: the API answered 4xx or 5xx.
            ClientError: the fabric refused the token, timed out or broke the connection.
        """
        content = None if body is None else msgspec.json.encode(body)
        headers = {} if body is None else {"content-type": "application/json"}
        try:
            resp = self._http.request(method, path, content=content, params=params, headers=headers)
        except httpx.ConnectError:
            raise NoFabricRunning(self.state_dir) from None
        except httpx.TimeoutException:
            raise ClientError(f"the fabric at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot talk to the fabric at {self.url}: {exc}") from None
        if resp.status_code == 401:
            raise ClientError(
                f"the fabric at {self.url} refused the token in {self.state_dir / 'token'}; "
                "is that folder this fabric's state folder?"
            )
        if resp.status_code >= 400:
            try:
                error = msgspec.json.decode(resp.content, type=api.ErrorBody).error
            except msgspec.MsgspecError:
                raise ApiRefused(
                    resp.status_code, "Unknown", f"HTTP {resp.status_code} from {self.url}"
                ) from None
            raise ApiRefused(resp.status_code, error.code, error.message)
        return resp

    def _get(self, path: str, kind: type[T], params: dict[str, str] | None = None) -> T:
        return msgspec.json.decode(self.request("GET", path, params=params).content, type=kind)

    def _start(
        self, method: str, path: str, body: msgspec.Struct | None = None, comp: str | None = None
    ) -> str:
        """Start an operation; returns its request id."""
        resp = self.request(method, path, body=body, params=None if comp is None else {"comp": comp})
        return str(resp.headers.get("x-ms-request-id", ""))

    @property
    def subscription(self) -> str:
        """The subscription id the client works in (the fabric's first)."""
        if self._subscription is None:
            subs = self._get("/subscriptions", api.Subscriptions).subscriptions
            if not subs:
                raise ClientError(f"the fabric at {self.url} has no subscription")
            self._subscription = subs[0].subscription_id
        return self._subscription

    def _services(self) -> str:
        return f"/subscriptions/{self.subscription}/services/hostedservices"

    def _slot(self, service: str, slot: Slot) -> str:
        return f"{self._services()}/{service}/deploymentslots/{slot}"

    # -- hosted services -----------------------------------------------------------------------------

    def hosted_services(self, *, detail: bool = True) -> list[api.HostedService]:
        """Every hosted service, with its deployments when ``detail``."""
        params = {"embed-detail": "true"} if detail else None
        return self._get(self._services(), api.HostedServices, params).hosted_services

    def deployments(self) -> list[DeploymentView]:
        """Every deployment of every hosted service."""
        out: list[DeploymentView] = []
        for hosted in self.hosted_services(detail=True):
            if not isinstance(hosted.deployments, msgspec.UnsetType):
                out.extend(hosted.deployments)
        return out

    def hosted_service(self, service: str) -> api.HostedService | None:
        """A hosted service, or None when it does not exist."""
        try:
            return self._get(f"{self._services()}/{service}", api.HostedService)
        except ApiRefused as exc:
            if exc.status == 404:
                return None
            raise

    def create_hosted_service(
        self, service: str, *, label: str = "", location: str | None = None, affinity_group: str | None = None
    ) -> None:
        """Create a hosted service."""
        body = api.CreateHostedService(
            service_name=service, label=label, location=location, affinity_group=affinity_group
        )
        self.request("POST", self._services(), body=body)

    def delete_hosted_service(self, service: str) -> None:
        """Delete a hosted service that has no deployments."""
        self.request("DELETE", f"{self._services()}/{service}")

    # -- deployments ---------------------------------------------------------------------------------

    def deployment(self, service: str, slot: Slot) -> DeploymentView:
        """The deployment in a slot."""
        return self._get(self._slot(service, slot), DeploymentView)

    def create_deployment(
        self,
        service: str,
        slot: Slot,
        *,
        name: str,
        package: bytes,
        configuration: bytes | None = None,
        configuration_name: str = "ServiceConfiguration.cscfg",
        label: str = "",
        start: bool = True,
    ) -> str:
        """Upload a package and create a deployment; returns the request id."""
        body = api.CreateDeployment(
            name=name,
            label=label,
            package=package,
            configuration=configuration,
            configuration_name=configuration_name,
            start_deployment=start,
        )
        return self._start("POST", self._slot(service, slot), body)

    def change_configuration(
        self,
        service: str,
        slot: Slot,
        configuration: bytes,
        configuration_name: str,
        mode: UpgradeMode = "Auto",
    ) -> str:
        """Apply a new configuration; returns the request id."""
        body = api.ChangeConfiguration(
            configuration=configuration, configuration_name=configuration_name, mode=mode
        )
        return self._start("POST", self._slot(service, slot), body, "config")

    def upgrade(
        self,
        service: str,
        slot: Slot,
        package: bytes,
        *,
        mode: UpgradeMode = "Auto",
        configuration: bytes | None = None,
        configuration_name: str = "ServiceConfiguration.cscfg",
        label: str = "",
    ) -> str:
        """Upgrade to a new package; returns the request id."""
        body = api.UpgradeDeployment(
            mode=mode,
            package=package,
            configuration=configuration,
            configuration_name=configuration_name,
            label=label,
        )
        return self._start("POST", self._slot(service, slot), body, "upgrade")

    def walk(self, service: str, slot: Slot, domain: int) -> str:
        """Upgrade the next update domain of a Manual upgrade; returns the request id."""
        return self._start(
            "POST",
            self._slot(service, slot),
            api.WalkUpgradeDomain(upgrade_domain=domain),
            "walkupgradedomain",
        )

    def set_status(self, service: str, slot: Slot, status: Any) -> str:
        """Suspend ("Suspended") or run ("Running") a deployment; returns the request id."""
        return self._start(
            "POST", self._slot(service, slot), api.UpdateDeploymentStatus(status=status), "status"
        )

    def instance_action(self, service: str, slot: Slot, instance: str, action: str) -> str:
        """Reboot, reimage or rebuild one instance; returns the request id."""
        return self._start("POST", f"{self._slot(service, slot)}/roleinstances/{instance}", comp=action)

    def delete_deployment(self, service: str, slot: Slot) -> str:
        """Delete a deployment; returns the request id."""
        return self._start("DELETE", self._slot(service, slot))

    def swap(self, service: str) -> str:
        """VIP swap of production and staging; returns the request id."""
        return self._start("POST", f"{self._services()}/{service}", api.Swap())

    # -- operations ----------------------------------------------------------------------------------

    def operation(self, request_id: str) -> api.Operation:
        """The state of an operation."""
        return self._get(f"/subscriptions/{self.subscription}/operations/{request_id}", api.Operation)

    def wait(
        self,
        request_id: str,
        *,
        on_poll: Callable[[api.Operation], None] | None = None,
        interval: float = 0.2,
        sleep: Callable[[float], None] | None = None,
    ) -> api.Operation:
        """Poll an operation until it is no longer InProgress; returns its final state."""
        import time

        pause = sleep or time.sleep
        while True:
            op = self.operation(request_id)
            if on_poll is not None:
                on_poll(op)
            if op.status != "InProgress":
                return op
            pause(interval)
