"""Relaying a request to the joined host an instance runs on (exec, shell, logs): finding the
host, asking it over its link with the unreachable host as a 409, and answering from a task."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from actors import Actor, ActorError, AskTimeout
from fabric.controller.hosts import HostUnavailable
from fabric.controller.messages import ControllerError, Slot
from fabric.controller.model import Instance
from fabric.controller.state import ControllerState
from fabric.host.remote import RemoteAccessOff

T = TypeVar("T")


def joined_host(state: ControllerState, service: str, slot: Slot, name: str) -> tuple[Instance, str | None]:
    """The instance (404 when unknown) and the id of its joined host (None on a local host)."""
    inst = state.get(service, slot).find(name)
    host = state.hosts.hosts.get(inst.host_id)
    return inst, host.id if host is not None and host.joined else None


async def ask_host(state: ControllerState, inst: Instance, host_id: str, message: Any, timeout: float) -> Any:
    """Ask the instance's joined host; 409 when it cannot be reached now."""
    try:
        return await state.hosts.ask(host_id, message, timeout)
    except HostUnavailable as exc:
        raise ControllerError(
            "ConflictError", f"{inst.id}'s host cannot be reached now: {exc}", 409
        ) from None


async def ask_remote_access(
    state: ControllerState, inst: Instance, host_id: str, message: Any, timeout: float
) -> Any:
    """Ask the host to relay to the VM's RemoteAccess agent: 409 remote access off or the host
    unreachable, 503 any other failure or no answer in time."""
    try:
        return await ask_host(state, inst, host_id, message, timeout)
    except ActorError as exc:
        code, status = (
            ("ConflictError", 409) if exc.caused_by(RemoteAccessOff) else ("ServiceUnavailable", 503)
        )
        raise ControllerError(code, exc.message, status) from None
    except AskTimeout:
        raise ControllerError("ServiceUnavailable", f"{inst.id}'s host did not answer in time", 503) from None


def answer_in_task(actor: Actor, answer: Callable[[], Awaitable[Any]]) -> None:
    """Answer the current request from a task of its own, so that the controller's mailbox is
    not held while a host answers; a ControllerError is the request's failure."""
    reply = actor.defer_reply()

    async def run() -> None:
        try:
            reply.resolve(await answer())
        except ControllerError as exc:
            reply.reject(exc)

    actor.start_soon(run)
