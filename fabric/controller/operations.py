"""Asynchronous operations: a request id, InProgress, then Succeeded or Failed with a code.

A long command is checked, then written to the store with its InProgress record in one
transaction (``Operations.record``); then its work runs in the background under
``Operations.run``, which records the outcome. The record lives in the
store, so GetOperation answers the same after a restart (an operation the restart cut short
reads Failed).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from fabric.controller.goal_store import GoalStore, Writes
from fabric.controller.messages import ControllerError, DeploymentStatus, OperationView
from fabric.controller.model import Deployment
from fabric.controller.store import OperationRecord

log = logging.getLogger("fabric.controller")


class Operations:
    """The operations of one controller.

    Args:
        store: where operations are recorded.
        pool: the pool recorded with each operation.
        notify: called when an operation ends (wakes waiters on the controller's state).
    """

    def __init__(self, store: GoalStore, pool: str, notify: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.pool = pool
        self.notify = notify

    async def begin(self, kind: str, target: str, description: str = "") -> str:
        """Record a new InProgress operation; returns its request id."""
        async with self.store.transaction() as tx:
            return self.record(tx, kind, target, description)

    def record(self, tx: Writes, kind: str, target: str, description: str = "") -> str:
        """Record a new InProgress operation in ``tx``, the transaction of the change it makes
        (an acknowledged operation always has its change, and no change is without its record);
        returns its request id."""
        request_id = uuid.uuid4().hex
        tx.put(
            OperationRecord(
                request_id=request_id, pool=self.pool, kind=kind, target=target, description=description
            )
        )
        return request_id

    async def _end(self, request_id: str, **changes: object) -> None:
        record = await self.store.operation(request_id)
        if record is None:
            return
        await self.store.put(msgspec.structs.replace(record, **changes))
        self.notify()

    async def succeed(self, request_id: str, description: str = "") -> None:
        """Mark the operation Succeeded (with a closing description, if given)."""
        changes: dict[str, object] = {"status": "Succeeded", "http_status_code": 200}
        if description:
            changes["description"] = description
        await self._end(request_id, **changes)

    async def progress(self, request_id: str, description: str) -> None:
        """Say how far an InProgress operation got (its description, read with GetOperation)."""
        await self._end(request_id, description=description)

    async def fail(self, request_id: str, error: ControllerError) -> None:
        """Mark the operation Failed with the error's code and message."""
        await self._end(
            request_id,
            status="Failed",
            http_status_code=error.status,
            error_code=error.code,
            error_message=error.message,
        )

    async def view(self, request_id: str) -> OperationView:
        """The OperationView of a request id.

        Raises:
            ControllerError: ResourceNotFound for an id this pool never issued.
        """
        r = await self.store.operation(request_id)
        if r is None:
            raise ControllerError("ResourceNotFound", f"no operation has request id {request_id!r}", 404)
        return OperationView(
            request_id=r.request_id,
            status=r.status,
            http_status_code=r.http_status_code,
            error_code=r.error_code,
            error_message=r.error_message,
            description=r.description,
        )

    async def run(
        self,
        request_id: str,
        dep: Deployment | None,
        work: Callable[[], Awaitable[str | None]],
        *,
        phase: DeploymentStatus | None = None,
    ) -> None:
        """Run an operation's work and record how it ended; never raises (but cancellation).

        While it runs, ``dep`` is busy with it (other changes are refused) and shows ``phase``.
        A delete may cancel it through ``dep.cancel_scope``.
        """
        scope = anyio.CancelScope()
        if dep is not None:
            dep.busy, dep.cancel_scope = request_id, scope
            if phase:
                dep.phase = phase
        try:
            with scope:
                description = await work()
            if scope.cancel_called:
                await self.fail(
                    request_id, ControllerError("ConflictError", "cancelled: the deployment was deleted", 409)
                )
            else:
                await self.succeed(request_id, description or "")
        except ControllerError as exc:
            log.warning("operation %s failed: %s", request_id, exc.message)
            await self.fail(request_id, exc)
        except Exception as exc:
            log.exception("operation %s failed", request_id)
            await self.fail(request_id, ControllerError("InternalError", f"{type(exc).__name__}: {exc}", 500))
        finally:
            if dep is not None and dep.busy == request_id:
                dep.busy, dep.cancel_scope = None, None
                dep.phase = None
            self.notify()
