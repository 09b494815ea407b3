"""`fabric shell` in an instance on a joined host: the VM's RemoteAccess agent listens on that
machine, so the front end hands each step of the shell's byte stream to the controller
(ShellInInstance), which relays it over the host's link (ShellStep, fabric.host.shell_relay);
``open`` answers None for an instance on a local host (the front end reaches its socket itself)."""

from __future__ import annotations

import msgspec

from actors import Actor, Request
from fabric.controller.instance_relay import answer_in_task, ask_remote_access, joined_host
from fabric.controller.messages import ControllerError, Slot
from fabric.controller.state import ControllerState
from fabric.host.messages import ShellChunk, ShellStep

#: past a step's own wait, how long a joined host may take to answer it
GRACE = 20.0


class ShellRelayed(msgspec.Struct, frozen=True, kw_only=True):
    """A step's answer from a joined host; None when the instance is on a local host."""

    chunk: ShellChunk | None = None


class ShellInInstance(Request[ShellRelayed], frozen=True, kw_only=True):
    """One step of a shell in an instance on a joined host (see ShellStep)."""

    service: str
    slot: Slot
    instance: str
    step: ShellStep


async def shell_step(state: ControllerState, request: ShellInInstance) -> ShellRelayed:
    """Relay the step to the instance's joined host (None for a local host).

    Raises:
        ControllerError: 404 unknown instance, 409 remote access off or the host unreachable,
            503 no answer in time, the session is gone or an answer that is not a ShellChunk.
    """
    inst, host_id = joined_host(state, request.service, request.slot, request.instance)
    if host_id is None:
        if request.step.op == "open":
            return ShellRelayed()
        raise ControllerError("ConflictError", f"{inst.id} is no longer on a joined host", 409)
    step = msgspec.structs.replace(request.step, instance_id=inst.vm)
    answer = await ask_remote_access(state, inst, host_id, step, step.wait + GRACE)
    try:
        chunk = answer if isinstance(answer, ShellChunk) else msgspec.convert(answer, ShellChunk)
    except msgspec.ValidationError as exc:
        raise ControllerError("ServiceUnavailable", f"a joined host answered nonsense: {exc}", 503) from None
    return ShellRelayed(chunk=chunk)


def answer_shell_later(actor: Actor, state: ControllerState, request: ShellInInstance) -> None:
    """Answer from a task of its own: a read waits for the shell's output."""
    answer_in_task(actor, lambda: shell_step(state, request))
