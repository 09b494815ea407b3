"""Remote access through the API: ``POST .../deploymentslots/{slot}/roleinstances/{name}/exec``
runs a command in the instance, through the RemoteAccess plugin agent in its VM (see
fabric.guest.plugin_agents.remote_exec), and answers its exit status and output.

The agent is reached on its Unix socket in the VM's C/Runtime folder, on this machine: VMs on a
host of another machine are not reachable this way yet.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from fabric.controller.messages import DeploymentView, GetDeployment
from fabric.frontend._http import Request, Response
from fabric.frontend.api import MAX_EXEC_WORDS, ApiError, ExecRequest, ExecResult, not_found
from fabric.frontend.ffe import Forward
from fabric.frontend.joined_exec import relay_exec
from fabric.frontend.joined_shell import open_relayed
from fabric.frontend.store import SubscriptionRecord
from fabric.guest.disk import VmDisk
from fabric.guest.plugin_agents._ready import socket_address
from fabric.guest.plugin_agents.remote_exec import EXEC_SOCKET, MAX_OUTPUT

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe

#: the most a command line may hold: its words, and their characters in all
MAX_WORDS = MAX_EXEC_WORDS
MAX_COMMAND_CHARS = 64 * 1024
#: past the command's own timeout, how long the agent may take to answer
ANSWER_GRACE = 15.0
#: the largest answer read from the agent (both streams base64, and the JSON around them)
_MAX_ANSWER = 2 * (MAX_OUTPUT * 4 // 3 + 8) + 4096


def owns(segments: list[str]) -> bool:
    """Whether a request's path is a remote session's (``.../roleinstances/{name}/exec``)."""
    return len(segments) == 10 and segments[7] == "roleinstances" and segments[9] == "exec"


async def route(
    rdfe: Rdfe, sub: SubscriptionRecord, service: str, slot: str, instance: str, r: Request
) -> Response:
    """``POST .../roleinstances/{name}/exec``: run the body's command in the instance."""
    rdfe._allow(r, "POST")
    r.limit_body(MAX_COMMAND_CHARS + 4096)
    body = await r.json(ExecRequest)
    if sum(len(word) for word in body.command) > MAX_COMMAND_CHARS or any("\0" in w for w in body.command):
        raise ApiError(400, "BadRequest", f"the command is over {MAX_COMMAND_CHARS} characters, or holds NUL")
    who = f"api {r.headers.get('user-agent', '')[:60]}".strip()
    request = {"command": body.command, "who": who, "timeout": body.timeout_seconds}
    # An instance on a joined host: its agent is on that machine, asked over the host's link.
    wait = body.timeout_seconds + ANSWER_GRACE
    answer = await relay_exec(rdfe, sub.id, service, slot, instance, request, wait)
    instance_id = instance
    if answer is None:
        socket, role, instance_id = await _agent_socket(rdfe, sub.id, service, slot, instance)
        answer = await _ask_agent(socket, request, wait, role)
    if "refused" in answer:
        status = int(answer.get("status", 409))
        code = {403: "Forbidden", 409: "ConflictError", 429: "TooManyRequests"}.get(status, "BadRequest")
        raise ApiError(status, code, f"{instance_id}: {answer['refused']}")
    return Response(
        200,
        ExecResult(
            exit_status=int(answer["exit_status"]),
            stdout=base64.b64decode(answer["stdout"]),
            stderr=base64.b64decode(answer["stderr"]),
            truncated=bool(answer["truncated"]),
            timed_out=bool(answer["timed_out"]),
        ),
    )


async def _agent_socket(
    rdfe: Rdfe, sub_id: str, service: str, slot: str, instance: str
) -> tuple[Path, str, str]:
    """(the RemoteAccess agent's session socket, the role, the instance id) of an instance.

    Raises:
        ApiError: 404 for an unknown subscription, service, slot or instance.
    """
    from fabric.frontend.slots import parse_slot

    hosted = rdfe.hosted(rdfe.subscription(sub_id), service)
    if hosted.pool is None:
        raise not_found(f"hosted service {hosted.name!r} has no deployment")
    view: DeploymentView = await rdfe.ask_ffe(
        Forward(pool=hosted.pool, command=GetDeployment(service=hosted.name, slot=parse_slot(slot)))
    )
    found = next((i for i in view.instances if i.id.lower() == instance.lower()), None)
    if found is None:
        raise not_found(f"deployment {view.name} has no role instance {instance!r}")
    vm = rdfe.state_dir / "vms" / f"{hosted.name}.{view.name}.{found.id}"
    return VmDisk(vm, view.id, found.role, found.id).runtime_dir / EXEC_SOCKET, found.role, found.id


async def _open_agent(socket: Path, role: str) -> anyio.abc.SocketStream:
    """A connection to the agent; 409 naming what to change when there is none."""
    try:
        with socket_address(socket) as address:
            return await anyio.connect_unix(address)
    except OSError:
        raise ApiError(
            409,
            "ConflictError",
            f"remote access is not enabled for role {role}: import the RemoteAccess plugin in its "
            "definition and set Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled to true "
            "(or the instance is not running)",
        ) from None


async def _ask_agent(socket: Path, request: dict[str, Any], timeout: float, role: str) -> dict[str, Any]:
    stream = await _open_agent(socket, role)
    data = b""
    async with stream:
        with contextlib.suppress(anyio.BrokenResourceError):  # its answer, if any, says why
            await stream.send(json.dumps(request).encode() + b"\n")
        with anyio.move_on_after(timeout), contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while b"\n" not in data and len(data) <= _MAX_ANSWER:
                data += await stream.receive()
    if b"\n" not in data:
        raise ApiError(503, "ServiceUnavailable", "the instance's remote access agent did not answer in time")
    answer: dict[str, Any] = json.loads(data.split(b"\n", 1)[0])
    return answer


# -- interactive shells: a WebSocket carrying a pseudo-terminal ------------------------------------


def owns_shell(segments: list[str]) -> bool:
    """Whether a WebSocket's path is a remote shell's (``.../roleinstances/{name}/shell``)."""
    return len(segments) == 10 and segments[7] == "roleinstances" and segments[9] == "shell"


async def shell(rdfe: Rdfe, scope: Mapping[str, Any], receive: Any, send: Any, *, authorized: bool) -> None:
    """``GET .../roleinstances/{name}/shell`` as a WebSocket: binary messages are the terminal's
    bytes both ways; text messages are JSON: ``{"resize": [rows, cols]}`` and ``{"signal":
    "INT"}`` from the client; ``{"ready": true}``, then at the end ``{"exit": status}`` or
    ``{"error": why, "status": http_status}`` from the fabric. Without the token the WebSocket
    is refused (403) before it opens."""
    from anyio.streams.buffered import BufferedByteReceiveStream

    from fabric.guest.plugin_agents.remote_shell import MAX_FRAME, frame, read_frame

    if (await receive())["type"] != "websocket.connect":
        return
    segments = [s for s in scope["path"].split("/") if s]
    if not authorized or not owns_shell(segments):
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    query = dict(
        part.split("=", 1)
        for part in scope.get("query_string", b"").decode("utf-8", "replace").split("&")
        if "=" in part
    )

    async def refuse(error: ApiError) -> None:
        await send(
            {"type": "websocket.send", "text": json.dumps({"error": error.message, "status": error.status})}
        )
        await send({"type": "websocket.close", "code": 1000})

    try:
        request = {
            "shell": True,
            "who": "api websocket",
            "rows": _size(query.get("rows"), 24),
            "cols": _size(query.get("cols"), 80),
            "term": query.get("term", "xterm")[:40],
        }
        # An instance on a joined host: its agent is on that machine, reached step by step
        # through the controller and the host's link.
        instance_id = segments[8]
        agent: anyio.abc.ByteStream | None = await open_relayed(
            rdfe, segments[1], segments[4], segments[6], segments[8]
        )
        if agent is None:
            socket, role, instance_id = await _agent_socket(
                rdfe, segments[1], segments[4], segments[6], segments[8]
            )
            agent = await _open_agent(socket, role)
    except ApiError as error:
        await refuse(error)
        return
    async with agent:
        with contextlib.suppress(anyio.BrokenResourceError):  # its answer, if any, says why
            await agent.send(json.dumps(request).encode() + b"\n")
        incoming = BufferedByteReceiveStream(agent)
        first: dict[str, Any] = {"refused": "the remote access agent closed the connection", "status": 503}
        with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound):
            first = json.loads(await incoming.receive_until(b"\n", 4096))
        if "refused" in first:
            await refuse(
                ApiError(int(first.get("status", 409)), "Refused", f"{instance_id}: {first['refused']}")
            )
            return
        await send({"type": "websocket.send", "text": json.dumps({"ready": True})})

        async def keys() -> None:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    await agent.send_eof()
                    return
                if message.get("bytes"):
                    data = message["bytes"]
                    for start in range(0, len(data), MAX_FRAME):
                        await agent.send(frame(b"d", data[start : start + MAX_FRAME]))
                elif message.get("text"):
                    control = _control(message["text"])
                    if control is None:  # a one-line refusal, as for a bad request
                        await refuse(ApiError(400, "BadRequest", f"not a shell control message: {CONTROLS}"))
                        tasks.cancel_scope.cancel()
                        return
                    await agent.send(control)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(keys)
            with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                while True:
                    kind, payload = await read_frame(incoming)
                    if kind == b"d":
                        await send({"type": "websocket.send", "bytes": payload})
                    elif kind == b"x":
                        await send({"type": "websocket.send", "text": json.dumps({"exit": int(payload)})})
                        break
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1000})
            tasks.cancel_scope.cancel()


#: what a text message of a shell may say
CONTROLS = '{"resize": [ROWS, COLS]} or {"signal": "INT"|"TERM"|"HUP"|"QUIT"}'


def _control(text: str) -> bytes | None:
    """The agent's frame for a client's control message (sizes clamped); None when malformed."""
    from fabric.guest.plugin_agents.remote_shell import MAX_ROWS_COLS, SIGNALS, frame

    try:
        control = json.loads(text)
    except ValueError:
        return None
    if not isinstance(control, dict):
        return None
    size, name = control.get("resize"), control.get("signal")
    if isinstance(size, list) and len(size) == 2 and all(type(n) is int for n in size):
        rows, cols = (max(1, min(n, MAX_ROWS_COLS)) for n in size)
        return frame(b"r", f"{rows} {cols}".encode())
    if isinstance(name, str) and name in SIGNALS:
        return frame(b"s", name.encode())
    return None


def _size(text: str | None, default: int) -> int:
    try:
        return max(1, min(int(text or default), 1000))
    except ValueError:
        return default
