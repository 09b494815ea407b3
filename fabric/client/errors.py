"""What a call to the fabric's API can fail with: one exception class per kind of answer, each
with a one-line message a user can act on. The mapping from HTTP to exception is here only."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import msgspec

from fabric.frontend import api


class ClientError(Exception):
    """A call that failed for a reason the user can act on; the message is one line."""


class NoFabricRunning(ClientError):
    """No fabric answers for the state folder (no ``api`` file, or nothing listens there)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        super().__init__(
            f"no fabric is running for state folder {state_dir}: start one with `fabric serve` or `fabric run`"
        )


class ApiRefused(ClientError):
    """The API answered with an error; ``status`` and ``code`` say which, ``message`` why."""

    def __init__(self, status: int, code: str, message: str, *, text: str | None = None) -> None:
        super().__init__(text or f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message


class BadRequest(ApiRefused):
    """400, or any other 4xx without a class of its own: the request itself is wrong."""


class Unauthorized(ApiRefused):
    """401: the fabric refused the token (it is not this fabric's state folder)."""


class Forbidden(ApiRefused):
    """403: the token may not do this."""


class NotFound(ApiRefused):
    """404: no such hosted service, deployment, instance, operation or fault."""


class Conflict(ApiRefused):
    """409: the fabric is in a state that does not allow it now (another operation, no room...)."""


class ServerError(ApiRefused):
    """5xx: the fabric failed (a bug, or it is stopping)."""


class OperationFailed(ClientError):
    """An accepted operation ended Failed; the message says which and why."""


_BY_STATUS: dict[int, type[ApiRefused]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden,
                                           404: NotFound, 409: Conflict}  # fmt: skip


def refusal(resp: httpx.Response, url: str, state_dir: Path) -> ApiRefused:
    """The exception for an error answer (status >= 400) of the fabric at ``url``."""
    status = resp.status_code
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else BadRequest)
    try:
        error = msgspec.json.decode(resp.content, type=api.ErrorBody).error
        code, message = error.code, error.message
    except msgspec.MsgspecError:
        code, message = "Unknown", f"HTTP {status} from {url}"
    if kind is Unauthorized:
        text = (
            f"the fabric at {url} refused the token in {state_dir / 'token'}; "
            "is that folder this fabric's state folder?"
        )
        return Unauthorized(status, code, message, text=text)
    return kind(status, code, " ".join(message.split()) or f"HTTP {status} from {url}")


def unreachable(exc: httpx.HTTPError, url: str, state_dir: Path) -> ClientError:
    """The exception for a call that got no answer from the fabric at ``url``."""
    from fabric.client.tls import untrusted

    if untrusted(exc):
        return ClientError(
            f"the fabric at {url} showed a certificate the CA pinned in {state_dir} did not sign "
            "(or for another address): refused"
        )
    if isinstance(exc, httpx.ConnectError):
        return NoFabricRunning(state_dir)
    if isinstance(exc, httpx.TimeoutException):
        return ClientError(f"the fabric at {url} did not answer in time")
    return ClientError(f"cannot talk to the fabric at {url}: {exc}")
