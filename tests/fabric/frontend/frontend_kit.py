"""The front end tests' kit: the real API on 127.0.0.1 with a stand-in controller."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx

from actors import Ref, open_system
from fabric.frontend.ffe import Ffe, Pool
from fabric.frontend.rdfe import serve_api
from tests.fabric.frontend.frontend_standin import StandInController

FIXTURES = Path(__file__).parent / "fixtures"
#: the body limit the test API runs with (the hello package is a few KiB)
TEST_BODY_LIMIT = 256 * 1024


@dataclass
class Api:
    """A served API and what a test needs to drive and inspect it."""

    url: str
    state: Path
    token: str
    controller: StandInController
    controller_ref: Ref
    http: httpx.AsyncClient
    subscription: str
    #: every pool's stand-in controller and its Ref, by pool name
    pools: dict[str, tuple[StandInController, Ref]]

    @property
    def services(self) -> str:
        """The hosted services collection path."""
        return f"/subscriptions/{self.subscription}/services/hostedservices"

    def slot(self, service: str = "hello", slot: str = "production") -> str:
        """A deployment slot path."""
        return f"{self.services}/{service}/deploymentslots/{slot}"

    def mutations(self) -> list[Any]:
        """Commands that reached the controller, minus the read-only ones."""
        from fabric.controller.messages import (
            GetDeployment,
            GetOperation,
            ListDeployments,
            SummarizeDeployments,
        )

        reads = GetDeployment | GetOperation | ListDeployments | SummarizeDeployments
        return [m for m in self.controller.received if not isinstance(m, reads)]

    async def create_service(self, name: str = "hello", **extra: Any) -> httpx.Response:
        """POST a hosted service."""
        return await self.http.post(self.services, json={"ServiceName": name, **extra})

    async def deploy(
        self, package: bytes, service: str = "hello", slot: str = "production", name: str = "d1", **extra: Any
    ) -> httpx.Response:
        """POST a deployment with a base64 package."""
        body = {"Name": name, "Package": base64.b64encode(package).decode(), **extra}
        return await self.http.post(self.slot(service, slot), json=body)


@asynccontextmanager
async def open_api(
    state: Path,
    *,
    auto_finish: bool = True,
    pools: Sequence[tuple[str, str]] = (("local", "Local"),),
    command_timeout: float = 30.0,
) -> AsyncIterator[Api]:
    """Serve the API for `state`; each pool (name, location) is run by a stand-in controller
    (which FFE gives ``command_timeout`` seconds to answer a command)."""
    async with open_system() as system:
        standins: dict[str, tuple[StandInController, Ref]] = {}
        for name, _ in pools:
            instance = StandInController(auto_finish=auto_finish)
            standins[name] = (instance, await system.spawn(partial(lambda i: i, instance), name=f"fc-{name}"))
        ffe = await system.spawn(
            lambda: Ffe(
                [Pool(name, standins[name][1], location) for name, location in pools],
                state,
                command_timeout=command_timeout,
            ),
            name="ffe",
        )
        async with anyio.create_task_group() as tg:
            limits = {"max_body_bytes": TEST_BODY_LIMIT, "max_package_bytes": TEST_BODY_LIMIT}
            url = await tg.start(partial(serve_api, ffe, state, **limits))
            token = (state / "token").read_text().strip()
            async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {token}"}) as http:
                subs = (await http.get("/subscriptions")).json()["Subscriptions"]
                first, first_ref = standins[pools[0][0]]
                yield Api(url, state, token, first, first_ref, http, subs[0]["SubscriptionId"], standins)
            tg.cancel_scope.cancel()
