"""The errors the actor runtime raises, each named for what went wrong."""

from __future__ import annotations


class MailboxFull(Exception):
    """tell_nowait() found the mailbox full; use tell() to wait for room instead."""


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
