"""`fabric logs` for an instance on a joined host: its VM's logs are on that machine, so the
controller asks the host for them over the link (a local host's are read from the state folder)."""

from __future__ import annotations

from actors import Actor, ActorError, AskTimeout, Request
from fabric.controller.instance_relay import answer_in_task, ask_host, joined_host
from fabric.controller.messages import ControllerError, InstanceLog, Slot
from fabric.controller.state import ControllerState
from fabric.host.messages import MAX_LOG_READ, GuestLog, ReadGuestLog

#: how long a host may take to read a log
READ_TIMEOUT = 30.0


class ReadInstanceLog(Request[InstanceLog], frozen=True, kw_only=True):
    """List the logs of an instance on a joined host, or read one from ``offset``."""

    service: str
    slot: Slot
    instance: str
    which: str = ""
    offset: int = 0
    limit: int = 256 * 1024


async def read_instance_log(state: ControllerState, request: ReadInstanceLog) -> InstanceLog:
    """Ask the instance's joined host for its logs.

    Raises:
        ControllerError: 404 unknown instance or log, 409 on a local host (read the state
            folder) or a host that is not linked now, 400 for numbers out of bounds.
    """
    if (
        not 0 <= request.offset <= 1 << 50
        or not 0 <= request.limit <= MAX_LOG_READ
        or len(request.which) > 200
    ):
        raise ControllerError(
            "BadRequest", f"offset 0 to 2**50, limit 0 to {MAX_LOG_READ}, a short log name", 400
        )
    inst, host_id = joined_host(state, request.service, request.slot, request.instance)
    if host_id is None:
        where = f"local host {inst.host_id}" if inst.host_id else "no host now"
        raise ControllerError(
            "ConflictError", f"{inst.id} runs on {where}: its logs are in the state folder", 409
        )
    ask = ReadGuestLog(instance_id=inst.vm, which=request.which, offset=request.offset, limit=request.limit)
    try:
        log: GuestLog = await ask_host(state, inst, host_id, ask, READ_TIMEOUT)
    except (ActorError, AskTimeout) as exc:
        message = exc.message if isinstance(exc, ActorError) else str(exc)
        raise ControllerError("ResourceNotFound", message, 404) from None
    return InstanceLog(host=host_id, vm=inst.vm, logs=log.logs, data=log.data, size=log.size, paths=log.paths)


def answer_later(actor: Actor, state: ControllerState, request: ReadInstanceLog) -> None:
    """Answer from a task of its own: the controller's mailbox (heartbeats wait there) is not
    held while a host reads."""
    answer_in_task(actor, lambda: read_instance_log(state, request))
