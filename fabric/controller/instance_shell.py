"""`fabric shell` in an instance on a joined host: the VM's RemoteAccess agent listens on that
machine, so the front end hands each step of the shell's byte stream to the controller
(ShellInInstance), which relays it over the host's link (ShellStep, fabric.host.shell_relay);
``open`` answers None for an instance on a local host (the front end reaches its socket itself)."""

from __future__ import annotations

import msgspec

from actors import Actor, ActorError, AskTimeout, Request
from fabric.controller.hosts import HostUnavailable
from fabric.controller.messages import ControllerError, Slot
from fabric.controller.state import ControllerState
from fabric.host.messages import ShellChunk, ShellStep
from fabric.host.remote import RemoteAccessOff

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
            503 no answer in time or the session is gone.
    """
    inst = state.get(request.service, request.slot).find(request.instance)
    host = state.hosts.hosts.get(inst.host_id)
    if host is None or not host.joined:
        if request.step.op == "open":
            return ShellRelayed()
        raise ControllerError("ConflictError", f"{inst.id} is no longer on a joined host", 409)
    step = msgspec.structs.replace(request.step, instance_id=inst.vm)
    try:
        answer = await state.hosts.ask(host.id, step, step.wait + GRACE)
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
    chunk = answer if isinstance(answer, ShellChunk) else msgspec.convert(answer, ShellChunk)
    return ShellRelayed(chunk=chunk)


def answer_shell_later(actor: Actor, state: ControllerState, request: ShellInInstance) -> None:
    """Answer from a task of its own: a read waits for the shell's output."""
    reply = actor.defer_reply()

    async def run() -> None:
        try:
            reply.resolve(await shell_step(state, request))
        except ControllerError as exc:
            reply.reject(exc)
        except msgspec.ValidationError as exc:
            reply.reject(
                ControllerError("ServiceUnavailable", f"a joined host answered nonsense: {exc}", 503)
            )

    actor.start_soon(run)
