"""The synchronous face of AsyncFabricClient, for the command line: each method runs the async
one on an event loop of the client's own (an anyio blocking portal in a thread)."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Concatenate, ParamSpec, TypeVar

from anyio.from_thread import start_blocking_portal

from fabric.client.asynchronous import AsyncFabricClient

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(
    method: Callable[Concatenate[AsyncFabricClient, P], Awaitable[R]],
) -> Callable[Concatenate[FabricClient, P], R]:
    """A method of FabricClient that runs ``method`` of its async client to the end."""

    @functools.wraps(method)
    def call(self: FabricClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.run(method, *args, **kwargs)

    return call


class FabricClient:
    """A synchronous client of one running fabric; use ``with`` (or ``close``: the client's loop
    runs in a thread of its own until then, and an interpreter waits for that thread at exit).

    The methods are AsyncFabricClient's, blocking; ``run`` runs any coroutine function that
    takes the async client first (the helpers of fabric.client.deployments).

    Raises:
        NoFabricRunning: the state folder has no ``api`` or ``token`` file.
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, timeout: float = 120.0) -> None:
        self.aio = AsyncFabricClient(state_dir, timeout=timeout)
        self.state_dir, self.url = self.aio.state_dir, self.aio.url
        self._portal_cm = start_blocking_portal(backend="trio")
        self._portal = self._portal_cm.__enter__()

    def run(
        self,
        func: Callable[Concatenate[AsyncFabricClient, P], Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run ``func(async client, *args, **kwargs)`` on the client's loop; return its result."""
        return self._portal.call(functools.partial(func, self.aio, *args, **kwargs))

    def close(self) -> None:
        """Close the connection pool and stop the client's loop."""
        self.__exit__(None, None, None)

    def __enter__(self) -> FabricClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # An exception ending the block (Ctrl-C during a wait) cancels the call still in flight.
        try:
            self._portal.call(self.aio.aclose)
        finally:
            self._portal_cm.__exit__(kind, exc, tb)

    request = _blocking(AsyncFabricClient.request)
    subscription = _blocking(AsyncFabricClient.subscription)
    hosted_services = _blocking(AsyncFabricClient.hosted_services)
    deployments = _blocking(AsyncFabricClient.deployments)
    deployment_pages = _blocking(AsyncFabricClient.deployment_pages)
    deployment_page = _blocking(AsyncFabricClient.deployment_page)
    paged_deployment = _blocking(AsyncFabricClient.paged_deployment)
    hosted_service = _blocking(AsyncFabricClient.hosted_service)
    create_hosted_service = _blocking(AsyncFabricClient.create_hosted_service)
    delete_hosted_service = _blocking(AsyncFabricClient.delete_hosted_service)
    add_certificate = _blocking(AsyncFabricClient.add_certificate)
    certificates = _blocking(AsyncFabricClient.certificates)
    certificate = _blocking(AsyncFabricClient.certificate)
    delete_certificate = _blocking(AsyncFabricClient.delete_certificate)
    exec = _blocking(AsyncFabricClient.exec)
    create_token = _blocking(AsyncFabricClient.create_token)
    tokens = _blocking(AsyncFabricClient.tokens)
    delete_token = _blocking(AsyncFabricClient.delete_token)
    hosts = _blocking(AsyncFabricClient.hosts)
    all_hosts = _blocking(AsyncFabricClient.all_hosts)
    cordon = _blocking(AsyncFabricClient.cordon)
    uncordon = _blocking(AsyncFabricClient.uncordon)
    remove_host = _blocking(AsyncFabricClient.remove_host)
    drain = _blocking(AsyncFabricClient.drain)
    host_operation = _blocking(AsyncFabricClient.host_operation)
    deployment = _blocking(AsyncFabricClient.deployment)
    create_deployment = _blocking(AsyncFabricClient.create_deployment)
    change_configuration = _blocking(AsyncFabricClient.change_configuration)
    upgrade = _blocking(AsyncFabricClient.upgrade)
    walk = _blocking(AsyncFabricClient.walk)
    set_status = _blocking(AsyncFabricClient.set_status)
    instance_action = _blocking(AsyncFabricClient.instance_action)
    instance_log = _blocking(AsyncFabricClient.instance_log)
    delete_deployment = _blocking(AsyncFabricClient.delete_deployment)
    swap = _blocking(AsyncFabricClient.swap)
    operation = _blocking(AsyncFabricClient.operation)
    wait = _blocking(AsyncFabricClient.wait)
    events = _blocking(AsyncFabricClient.events)
    inject = _blocking(AsyncFabricClient.inject)
    faults = _blocking(AsyncFabricClient.faults)
    undo = _blocking(AsyncFabricClient.undo)
    targets = _blocking(AsyncFabricClient.targets)
