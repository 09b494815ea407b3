"""An actor whose handler raises registered and unregistered errors, in or out of process."""

from __future__ import annotations

from typing import Any, Literal

from actors import Actor, Request, register_error


@register_error("code", "message", "status")
class Refusal(Exception):
    """A refusal a caller tells apart by its code and status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NamedRefusal(Refusal):
    """A subclass of a registered error, not registered itself: it crosses as a Refusal."""


@register_error()
class Gone(LookupError):
    """A registered error without fields: rebuilt from its message."""


@register_error("thing")
class Opaque(Exception):
    """A registered error whose field is no plain data: it crosses as an ActorError alone."""

    def __init__(self, thing: object) -> None:
        super().__init__(f"opaque {thing!r}")
        self.thing = thing


Kind = Literal["refusal", "named", "gone", "bug", "opaque"]


class Raise(Request[None], frozen=True):
    """Raise the error of this kind in the handler."""

    kind: Kind


class Refuser(Actor):
    """Answers every Raise by raising."""

    async def receive(self, message: Any) -> Any:
        match message:
            case Raise(kind="refusal"):
                raise Refusal("ConflictError", "the slot is taken", 409)
            case Raise(kind="named"):
                raise NamedRefusal("ResourceNotFound", "no such thing", 404)
            case Raise(kind="gone"):
                raise Gone("no instance 'Web_IN_0' here")
            case Raise(kind="opaque"):
                raise Opaque(object())
            case Raise():
                raise ValueError("a plain bug: 42")
        return await super().receive(message)
