"""A stand-in controller for a child process: refuses GetDeployment as the real one would
(a ControllerError with its code and status), and fails ListDeployments as a bug would."""

from __future__ import annotations

from typing import Any

from actors import Actor
from fabric.controller.messages import ControllerError, GetDeployment, ListDeployments


class RefusingController(Actor):
    """Refuses every GetDeployment; raises a plain bug on ListDeployments."""

    async def receive(self, message: Any) -> Any:
        match message:
            case GetDeployment(service=service, slot=slot):
                raise ControllerError("ResourceNotFound", f"no deployment in {service}/{slot}", 404)
            case ListDeployments():
                raise KeyError("a bug in the controller")
        return await super().receive(message)
