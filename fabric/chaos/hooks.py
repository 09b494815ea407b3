"""The two small hooks chaos needs in others' actors: the controller hands ChaosCommand to its
chaos agent, and a host agent applies link faults to its guests' Refs.

Kept light on purpose: the controller and host agent import this module, and chaos must cost
nothing until it is used (the agent module loads on the first ChaosCommand).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import msgspec

from actors import Request, register_error

if TYPE_CHECKING:
    from actors import Actor, Ref

Direction = Literal["out", "in", "both"]
GuestLinkAction = Literal["drop", "delay", "cut", "clear"]


#: The answer type of a chaos request.
Answer = TypeVar("Answer")


class ChaosCommand(Request[Answer], Generic[Answer], frozen=True):
    """The envelope FFE forwards to a fabric controller for its chaos agent (fabric.chaos.messages)."""

    request: Request[Answer]


class GuestLinkFault(Request["GuestLinkApplied"], frozen=True, tag=True, kw_only=True):
    """Controller -> host agent: drop, delay or cut the link to one VM, or clear it."""

    instance_id: str
    action: GuestLinkAction
    direction: Direction = "both"
    probability: float = 0.0
    seconds: float = 0.0
    jitter: float = 0.0
    seed: int | None = None  # of the drop and jitter draws (see LinkFaults.reseed)


class GuestLinkApplied(msgspec.Struct, frozen=True, kw_only=True):
    """The host agent's answer: the VM's pid (0 when it is down)."""

    instance_id: str
    pid: int


@register_error()
class GuestLinkUnavailable(RuntimeError):
    """The VM named by a GuestLinkFault does not run on this host now (registered: the
    controller tells this refusal apart from a bug across the host's link)."""


#: Each controller's chaos agent, spawned on first use.
_agents: weakref.WeakKeyDictionary[Actor, Ref] = weakref.WeakKeyDictionary()


async def answer_chaos(controller: Actor, command: ChaosCommand[Any]) -> None:
    """Hand a ChaosCommand to the controller's chaos agent (spawned on first use) and answer
    from a task of the controller's: its mailbox stays free while the agent works."""
    reply = controller.defer_reply()
    agent = _agents.get(controller)
    if agent is None:
        from fabric.chaos.agent import ChaosAgent

        agent = _agents[controller] = await controller.spawn(lambda: ChaosAgent(controller), name="Chaos")

    async def run() -> None:
        from actors import ActorDead, ActorError
        from fabric.controller.messages import ControllerError

        try:
            value = await agent.ask(command.request, timeout=120.0)
        except ActorDead as exc:
            _agents.pop(controller, None)  # the next command starts another
            reply.reject(exc)
        except ActorError as exc:
            # A refusal keeps its ControllerError, so FFE answers it as a 4xx.
            reply.reject(exc.caused_by(ControllerError) or exc)
        except Exception as exc:
            reply.reject(exc)
        else:
            reply.resolve(value)

    controller.start_soon(run)


def apply_guest_link(guests: dict[str, Any], fault: GuestLinkFault) -> GuestLinkApplied:
    """Apply a GuestLinkFault to the link of one of a host agent's guests.

    Raises:
        GuestLinkUnavailable: no such guest here, or its VM is down (rebooting).
    """
    guest = guests.get(fault.instance_id)
    vm = getattr(guest, "vm", None)
    faults = getattr(vm, "faults", None)
    if faults is None:
        if fault.action == "clear":
            return GuestLinkApplied(instance_id=fault.instance_id, pid=0)
        raise GuestLinkUnavailable(
            f"the VM of {fault.instance_id} does not run on this host now; try again once it is up"
        )
    if fault.seed is not None:
        faults.reseed(fault.seed)
    match fault.action:
        case "drop":
            faults.drop(fault.probability, fault.direction)
        case "delay":
            faults.delay(fault.seconds, fault.jitter, fault.direction)
        case "cut":
            faults.cut(fault.direction)
        case "clear":
            faults.clear(fault.direction)
    return GuestLinkApplied(instance_id=fault.instance_id, pid=getattr(vm, "pid", 0) or 0)
