"""An async client of the chaos API of a running fabric, found through its state folder.

Errors are those of fabric.frontend.client: NoFabricRunning, ApiRefused (with the API's code
and message), ClientError.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from fabric.chaos.messages import (
    FaultList,
    FaultRecord,
    Inject,
    Slot,
    TargetMap,
    WatchBatch,
    WatchStart,
)
from fabric.frontend import api
from fabric.frontend.auth import read_api_url, read_token
from fabric.frontend.client import ApiRefused, ClientError, NoFabricRunning

T = TypeVar("T")


class ChaosClient:
    """Talks to ``/chaos/...`` of the fabric serving ``state_dir``; use ``async with``.

    Raises:
        NoFabricRunning: the state folder has no ``api`` or ``token`` file.
    """

    def __init__(
        self, state_dir: str | os.PathLike[str], *, pool: str | None = None, timeout: float = 60.0
    ) -> None:
        self.state_dir = Path(state_dir)
        url, token = read_api_url(self.state_dir), read_token(self.state_dir)
        if url is None or token is None:
            raise NoFabricRunning(self.state_dir)
        self.url = url
        self.pool = pool
        self._http = httpx.AsyncClient(
            base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=timeout
        )

    async def __aenter__(self) -> ChaosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, kind: type[T], body: Any = None, **params: Any) -> T:
        query = {k: str(v) for k, v in params.items() if v is not None}
        if self.pool is not None:
            query["pool"] = self.pool
        content = None if body is None else msgspec.json.encode(body)
        try:
            resp = await self._http.request(method, path, content=content, params=query)
        except httpx.ConnectError:
            raise NoFabricRunning(self.state_dir) from None
        except httpx.TimeoutException:
            raise ClientError(f"the fabric at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot talk to the fabric at {self.url}: {exc}") from None
        if resp.status_code >= 400:
            try:
                error = msgspec.json.decode(resp.content, type=api.ErrorBody).error
            except msgspec.MsgspecError:
                raise ApiRefused(
                    resp.status_code, "Unknown", f"HTTP {resp.status_code} from {self.url}"
                ) from None
            raise ApiRefused(resp.status_code, error.code, error.message)
        return msgspec.json.decode(resp.content, type=kind)

    async def inject(self, inject: Inject) -> FaultRecord:
        """Apply a fault now."""
        return await self._call("POST", "/chaos/faults", FaultRecord, inject)

    async def faults(self) -> list[FaultRecord]:
        """Every fault record, active first."""
        return (await self._call("GET", "/chaos/faults", FaultList)).faults

    async def undo(self, fault_id: str | None = None) -> list[FaultRecord]:
        """Undo one lasting fault, or every one in force."""
        if fault_id is None:
            return (await self._call("DELETE", "/chaos/faults", FaultList)).faults
        return [await self._call("DELETE", f"/chaos/faults/{fault_id}", FaultRecord)]

    async def targets(self, service: str | None = None, slot: str = "production") -> TargetMap:
        """What faults can hit in a deployment now."""
        return await self._call("GET", "/chaos/targets", TargetMap, service=service, slot=slot)

    async def watch(
        self, service: str | None = None, slot: Slot = "production", lease: float = 30.0
    ) -> WatchBatch:
        """Start watching a deployment's instances."""
        body = WatchStart(service=service, slot=slot, lease=lease)
        return await self._call("POST", "/chaos/watches", WatchBatch, body, service=service)

    async def poll(self, watch_id: str, since: int) -> WatchBatch:
        """A watch's events from ``since`` on."""
        return await self._call("GET", f"/chaos/watches/{watch_id}", WatchBatch, since=since)

    async def stop_watch(self, watch_id: str, since: int) -> WatchBatch:
        """End a watch; its last events."""
        return await self._call("DELETE", f"/chaos/watches/{watch_id}", WatchBatch, since=since)
