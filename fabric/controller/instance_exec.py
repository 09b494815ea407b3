"""`fabric exec` for an instance on a joined host: the VM's RemoteAccess agent listens on that
machine, so the controller hands the request line to the host over its link (ExecInVm) and
answers the agent's line; for an instance on a local host it answers None (the front end
reaches the agent's socket in the state folder itself)."""

from __future__ import annotations

import msgspec

from actors import Actor, ActorError, AskTimeout, Request
from fabric.controller.hosts import HostUnavailable
from fabric.controller.messages import ControllerError, Slot
from fabric.controller.state import ControllerState
from fabric.host.messages import MAX_EXEC_REQUEST, ExecInVm
from fabric.host.remote import RemoteAccessOff

#: past the command's own timeout, how long a joined host may take to answer
GRACE = 20.0


class ExecRelayed(msgspec.Struct, frozen=True, kw_only=True):
    """The agent's answer line from a joined host; None when the instance is on a local host."""

    answer: bytes | None = None


class ExecInInstance(Request[ExecRelayed], frozen=True, kw_only=True):
    """Run a RemoteAccess request (one JSON line) in an instance on a joined host."""

    service: str
    slot: Slot
    instance: str
    line: bytes
    timeout: float


async def exec_in_instance(state: ControllerState, request: ExecInInstance) -> ExecRelayed:
    """Relay the request to the instance's joined host (None for a local host).

    Raises:
        ControllerError: 404 unknown instance, 409 remote access off or the host unreachable,
            503 no answer in time, 400 a request out of bounds.
    """
    if len(request.line) > MAX_EXEC_REQUEST or not 0 < request.timeout <= 4000:
        raise ControllerError("BadRequest", f"an exec request takes at most {MAX_EXEC_REQUEST} bytes", 400)
    inst = state.get(request.service, request.slot).find(request.instance)
    host = state.hosts.hosts.get(inst.host_id)
    if host is None or not host.joined:
        return ExecRelayed()
    ask = ExecInVm(instance_id=inst.vm, line=request.line, timeout=request.timeout)
    try:
        answer: bytes = await state.hosts.ask(host.id, ask, request.timeout + GRACE)
    except HostUnavailable as exc:
        raise ControllerError(
            "ConflictError", f"{inst.id}'s host cannot be reached now: {exc}", 409
        ) from None
    except ActorError as exc:
        code, status = (
            ("ConflictError", 409) if exc.caused_by(RemoteAccessOff) else ("ServiceUnavailable", 503)
        )
        raise ControllerError(code, exc.message, status) from None
    except AskTimeout:
        raise ControllerError("ServiceUnavailable", f"{inst.id}'s host did not answer in time", 503) from None
    return ExecRelayed(answer=answer)


def answer_exec_later(actor: Actor, state: ControllerState, request: ExecInInstance) -> None:
    """Answer from a task of its own: a command may run for minutes."""
    reply = actor.defer_reply()

    async def run() -> None:
        try:
            reply.resolve(await exec_in_instance(state, request))
        except ControllerError as exc:
            reply.reject(exc)

    actor.start_soon(run)
