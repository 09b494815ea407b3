"""The errors the actor runtime raises, each named for what went wrong, and the registry of
the errors that keep their type across a link."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

#: An exception class, as the registry takes and gives it back.
E = TypeVar("E", bound=BaseException)


class MailboxFull(Exception):
    """tell_nowait() found the mailbox full; use tell() to wait for room instead.

    Attributes:
        sent: from tell_many_nowait(), how many of the messages were queued (the first ones, in
            order) before one found no room; the rest were not sent.
    """

    def __init__(self, *args: object, sent: int = 0) -> None:
        super().__init__(*args)
        self.sent = sent


class AskTimeout(TimeoutError):
    """ask() got no reply within its timeout."""


class ActorDead(Exception):
    """The actor is gone (stopped, crashed for good, or its process and link are lost)."""


class ActorError(Exception):
    """A handler raised while answering an ask; carries the remote exception's details.

    Attributes:
        type_name: the qualified name of the exception type raised by the handler.
        message: ``str()`` of that exception.
        traceback: the formatted traceback text, as the handler's process saw it.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def caused_by(self, kind: type[E]) -> E | None:
        """The exception the handler raised, when it is a ``kind``; None for any other.

        In the asker's process it is the handler's own exception; across a link it is rebuilt
        from the wire, with its fields, which only a registered class is (see register_error).

        Raises:
            TypeError: ``kind`` is not registered, so it would be lost across a link.
        """
        if registered_fields(kind) is None:
            raise TypeError(
                f"{kind.__qualname__} is not registered: it does not cross a link (register_error)"
            )
        cause = self.__cause__
        return cause if isinstance(cause, kind) else None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ActorError:
        """Describe a local exception the way a remote one would be described."""
        import traceback

        kind = type(exc)
        name = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        text = "".join(traceback.format_exception(exc))
        return cls(name, str(exc), text)


#: Registered exception classes: their fields, and their wire names ("module:QualName").
_fields: dict[type[BaseException], tuple[str, ...]] = {}
_by_name: dict[str, type[BaseException]] = {}


def register_error(*fields: str) -> Callable[[type[E]], type[E]]:
    """Make an exception class keep its type across a link: a class decorator.

    When a handler raises it while answering an ask, the asker's ActorError carries it as
    ``__cause__`` (see ActorError.caused_by) in another process too, rebuilt as
    ``cls(**{field: value})`` from the attributes named by ``fields``, which must be plain data
    (str, int, float, bool, None, bytes, lists and dicts of them). With no fields it is rebuilt
    from its message alone, as ``cls(str(exc))``. Register the errors a caller must tell apart
    (refusals with a code); any other exception crosses a link as an ActorError with its text.
    A subclass of a registered class crosses as that class.
    """

    def register(cls: type[E]) -> type[E]:
        if not issubclass(cls, Exception):
            raise TypeError(f"{cls.__qualname__} is not an Exception")
        parameters = inspect.signature(cls).parameters if fields else {}
        missing = [f for f in fields if f not in parameters]
        if missing:
            raise TypeError(f"{cls.__qualname__}() takes no argument named {', '.join(missing)}")
        _fields[cls] = fields
        _by_name[wire_name(cls)] = cls
        return cls

    return register


def wire_name(cls: type) -> str:
    """A class's name on the wire: ``module:QualName``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def registered_fields(cls: type[BaseException]) -> tuple[str, ...] | None:
    """The fields of a registered class; None when neither it nor a base class is registered."""
    for kind in cls.__mro__:
        fields = _fields.get(kind)
        if fields is not None:
            return fields
    return None


def registered_class(cls: type[BaseException]) -> type[BaseException] | None:
    """The registered class an exception crosses a link as: its own, or a base class's."""
    return next((kind for kind in cls.__mro__ if kind in _fields), None)


def rebuild_registered(
    name: str, message: str, fields: dict[str, Any], imports: bool = True
) -> BaseException | None:
    """The registered exception named ``name`` ("module:QualName") from its wire fields; None
    when no such class is registered here (its module is imported to find it, unless
    ``imports`` is false) or the fields do not fit it."""
    cls = _by_name.get(name)
    if cls is None and not imports:
        return None
    if cls is None:
        module_name, _, _ = name.partition(":")
        try:
            importlib.import_module(module_name)  # registers its classes
        except ImportError:
            return None
        cls = _by_name.get(name)
        if cls is None:
            return None
    try:
        return cls(**fields) if _fields[cls] else cls(message)
    except Exception:  # the peer runs another version of the class
        return None


class ProcessExited(Exception):
    """A process actor's process ended without being asked to (its exit code or signal is named)."""

    def __init__(self, name: str, returncode: int | None, detail: str = "") -> None:
        how = _describe_returncode(returncode)
        super().__init__(f"process actor {name!r} {how}" + (f": {detail}" if detail else ""))
        self.returncode = returncode


class Unresponsive(Exception):
    """A process actor stopped answering liveness pings."""


class RestartIntensityExceeded(Exception):
    """A supervisor's children failed more often than its restart intensity allows."""


def _describe_returncode(returncode: int | None) -> str:
    if returncode is None:
        return "vanished"
    if returncode < 0:
        import signal

        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"
