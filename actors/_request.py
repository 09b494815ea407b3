"""Requests: messages that are asked, typed with the answer they get."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

#: The type of a request's answer (a ``Request[bool]`` is a ``Request[int]``: covariant).
R_co = TypeVar("R_co", covariant=True)
#: An answer type, solved at a call site (``ask(message: Request[R]) -> R``).
R = TypeVar("R")


class Request(msgspec.Struct, Generic[R_co], frozen=True):
    """A message that is asked, not told: ``class GetStatus(Request[StatusView])`` is answered
    with a StatusView, and ``await ref.ask(GetStatus())`` is typed so.

    It adds no field and no tag: a request crosses the wire exactly as the plain Struct it
    subclasses would. Messages that are only told stay plain Structs.
    """
