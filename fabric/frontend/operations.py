"""Asynchronous operations: every request gets a request id, and GET operations/{id} reads it.

Long fabric commands answer at once with the controller's request id; their state lives in
that controller and is read through FFE. Requests RDFE finishes by itself (a hosted service
created, a command a controller answered at once) are recorded here as already finished, so
``GET .../operations/{id}`` answers for every id the API ever returned, as in Azure.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import msgspec

from fabric.controller.messages import GetOperation, OperationView
from fabric.frontend import api
from fabric.frontend.api import ApiError, not_found
from fabric.frontend.ffe import Forward, ListPools, PoolInfo

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe


class OperationRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Who an operation belongs to and where its state lives."""

    request_id: str
    subscription: str
    #: the pool whose controller runs it; None when RDFE finished it itself
    pool: str | None = None
    #: the final state, for an operation RDFE finished itself
    view: OperationView | None = None


class OperationLog:
    """The most recent operations (a bounded history: the oldest are forgotten first)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, OperationRecord] = OrderedDict()

    def _add(self, record: OperationRecord) -> None:
        self._records[record.request_id] = record
        self._records.move_to_end(record.request_id)
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)

    def started(self, request_id: str, subscription: str, pool: str) -> None:
        """Record an operation a controller runs."""
        self._add(OperationRecord(request_id=request_id, subscription=subscription, pool=pool))

    def finished(
        self,
        request_id: str,
        subscription: str,
        *,
        http_status_code: int = 200,
        error_code: str = "",
        error_message: str = "",
    ) -> None:
        """Record an operation that is already over (Succeeded, or Failed with an error)."""
        failed = http_status_code >= 400
        view = OperationView(
            request_id=request_id,
            status="Failed" if failed else "Succeeded",
            http_status_code=http_status_code,
            error_code=error_code,
            error_message=error_message,
        )
        self._add(OperationRecord(request_id=request_id, subscription=subscription, view=view))

    def get(self, request_id: str) -> OperationRecord | None:
        """The record of a request id, or None when it is unknown (or forgotten)."""
        return self._records.get(request_id)

    def __len__(self) -> int:
        return len(self._records)


async def read_operation(rdfe: Rdfe, subscription: str, request_id: str) -> api.Operation:
    """The body of ``GET .../operations/{request_id}``; 404 for an id this subscription never saw."""
    record = rdfe.operations.get(request_id)
    view: OperationView | None = None
    if record is not None:
        if record.subscription != subscription:
            pass  # another subscription's operation is not visible here
        elif record.view is not None:
            view = record.view
        elif record.pool is not None:
            view = await rdfe.ask_ffe(Forward(pool=record.pool, command=GetOperation(request_id=request_id)))
    else:
        # Not in this run's log (the fabric restarted): the controllers keep their own.
        pools: list[PoolInfo] = await rdfe.ask_ffe(ListPools())
        for pool in pools:
            try:
                view = await rdfe.ask_ffe(
                    Forward(pool=pool.name, command=GetOperation(request_id=request_id))
                )
                break
            except ApiError:
                continue
    if view is None:
        raise not_found(f"no operation with request id {request_id!r} in this subscription")
    error = None
    if view.status == "Failed":
        error = api.ErrorDetail(code=view.error_code or "InternalError", message=view.error_message)
    return api.Operation(
        id=view.request_id, status=view.status, http_status_code=view.http_status_code, error=error
    )
