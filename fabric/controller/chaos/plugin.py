"""The controller's chaos plugin: it hands each ChaosCommand to the controller's chaos agent.

Kept light on purpose: the controller imports this module, and chaos must cost nothing until it
is used (the agent module loads on the first ChaosCommand).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors import Actor, Ref
    from fabric.controller.chaos.messages import ChaosCommand

#: Each controller's chaos agent, spawned on first use.
_agents: weakref.WeakKeyDictionary[Actor, Ref] = weakref.WeakKeyDictionary()


async def answer_chaos(controller: Actor, command: ChaosCommand[Any]) -> None:
    """Hand a ChaosCommand to the controller's chaos agent (spawned on first use) and answer
    from a task of the controller's: its mailbox stays free while the agent works."""
    reply = controller.defer_reply()
    agent = _agents.get(controller)
    if agent is None:
        from fabric.controller.chaos.agent import ChaosAgent

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
