"""The client of a running fabric's API: AsyncFabricClient (httpx), FabricClient (its blocking
face, for the command line), the errors every call raises, and the deployment helpers."""

from __future__ import annotations

from fabric.client.asynchronous import API_VERSION, AsyncFabricClient
from fabric.client.blocking import FabricClient
from fabric.client.errors import (
    ApiRefused,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    NoFabricRunning,
    NotFound,
    OperationFailed,
    ServerError,
    Unauthorized,
)

__all__ = [
    "API_VERSION",
    "ApiRefused",
    "AsyncFabricClient",
    "BadRequest",
    "ClientError",
    "Conflict",
    "FabricClient",
    "Forbidden",
    "NoFabricRunning",
    "NotFound",
    "OperationFailed",
    "ServerError",
    "Unauthorized",
]
