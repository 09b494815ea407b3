"""Asking a fabric controller: its refusals come back as ControllerError, and operations can
be waited for."""

from __future__ import annotations

from typing import TypeVar

import anyio

from actors import ActorError, Ref, Request
from fabric.controller.messages import ControllerError, GetOperation, OperationView

#: The answer type of a command.
Answer = TypeVar("Answer")


async def ask(controller: Ref, command: Request[Answer], *, timeout: float | None = 60.0) -> Answer:
    """Ask a controller a command and return its answer.

    Raises:
        ControllerError: the controller refused the command (nothing changed).
        ActorError: a bug in the controller.
    """
    try:
        return await controller.ask(command, timeout=timeout)
    except ActorError as exc:
        refusal = exc.caused_by(ControllerError)
        if refusal is not None:
            raise refusal from None
        raise


async def wait_operation(
    controller: Ref, request_id: str, *, timeout: float = 60.0, poll: float = 0.02
) -> OperationView:
    """Poll an operation until it is no longer InProgress; return its final view.

    Raises:
        TimeoutError: still InProgress after ``timeout`` seconds.
    """
    with anyio.fail_after(timeout):
        while True:
            view = await ask(controller, GetOperation(request_id=request_id))
            if view.status != "InProgress":
                return view
            await anyio.sleep(poll)
