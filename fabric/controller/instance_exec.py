"""`fabric exec` for an instance on a joined host: the VM's RemoteAccess agent listens on that
machine, so the controller hands the request line to the host over its link (ExecInVm) and
answers the agent's line; for an instance on a local host it answers None (the front end
reaches the agent's socket in the state folder itself)."""

from __future__ import annotations

import msgspec

from actors import Actor, Request
from fabric.controller.instance_relay import answer_in_task, ask_remote_access, joined_host
from fabric.controller.messages import ControllerError, Slot
from fabric.controller.state import ControllerState
from fabric.host.messages import MAX_EXEC_REQUEST, ExecInVm

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
    inst, host_id = joined_host(state, request.service, request.slot, request.instance)
    if host_id is None:
        return ExecRelayed()
    ask = ExecInVm(instance_id=inst.vm, line=request.line, timeout=request.timeout)
    answer: bytes = await ask_remote_access(state, inst, host_id, ask, request.timeout + GRACE)
    return ExecRelayed(answer=answer)


def answer_exec_later(actor: Actor, state: ControllerState, request: ExecInInstance) -> None:
    """Answer from a task of its own: a command may run for minutes."""
    answer_in_task(actor, lambda: exec_in_instance(state, request))
