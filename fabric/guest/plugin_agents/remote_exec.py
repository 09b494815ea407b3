"""Remote access sessions, served by the RemoteAccess plugin agent inside the VM.

The agent listens on ``C/Runtime/RemoteAccess.exec.sock`` (root's folder: only the fabric
reaches it, and the API in front of it asks for the token). A request is one JSON line::

    {"command": ["id", "-u"], "who": "...", "timeout": 60}

and the answer one JSON line: ``{"exit_status", "stdout", "stderr" (base64), "truncated",
"timed_out"}``, or ``{"refused": "...", "status": 403|409}`` when remote access is not enabled
for the role or its account has expired. The command runs as the role's account in the VM's
sandbox (as a limited startup task does: fabric.guest.task_leader), in E/approot, with the
fabric's interpreter first on PATH (``python`` is it), the role's TEMP and the RoleEnvironment
variables (RoleRoot, RoleInstanceID, RoleName,
RoleDeploymentID, and RoleEnvironmentFile: the instance's configuration document). Its whole
process group is killed when it ends, so nothing it started outlives the session. Every session
and refusal is logged in ``DiagnosticStore/RemoteAccess/Sessions.log``: when, who, the command
and the exit status.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from fabric.guest.account import role_temp_env, vm_sandbox
from fabric.guest.disk import VmDisk
from fabric.guest.plugin_agents._ready import socket_address

EXEC_SOCKET = "RemoteAccess.exec.sock"
#: the most output kept of each stream (the rest is dropped, and the answer says so)
MAX_OUTPUT = 1024 * 1024
#: the longest request line accepted
MAX_REQUEST = 128 * 1024
#: the longest a command may run
MAX_TIMEOUT = 3600.0
#: sessions (commands and shells) one instance runs at once
MAX_SESSIONS = 8
_PREFIX = "Microsoft.WindowsAzure.Plugins.RemoteAccess."


@dataclass(frozen=True)
class Account:
    """The remote access settings the agent was started with."""

    enabled: bool
    username: str
    expiration: str

    @classmethod
    def in_force(cls, config_file: Path, started_with: Account) -> Account:
        """The settings of the instance's configuration document now (the guest agent rewrites
        it on every configuration change), else those the agent was started with. Blocking."""
        try:
            root = ET.parse(config_file).getroot()
        except (OSError, ET.ParseError):
            return started_with
        values = {
            e.get("name", ""): e.get("value", "")
            for e in root.iter("ConfigurationSetting")
            if e.get("name", "").startswith(_PREFIX)
        }
        if not values:
            return started_with
        return cls.from_environ({k.replace(".", "_"): v for k, v in values.items()})

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> Account:
        """Read the plugin's settings from the agent's environment variables."""

        def get(name: str) -> str:
            return environ.get((_PREFIX + name).replace(".", "_"), "")

        return cls(
            enabled=get("Enabled").strip().lower() == "true",
            username=get("AccountUsername"),
            expiration=get("AccountExpiration"),
        )

    def refusal(self, now: datetime.datetime | None = None) -> tuple[int, str] | None:
        """(HTTP status, why) when a session may not start now, else None."""
        if not self.enabled:
            return 409, (
                f"remote access is not enabled for this role: set {_PREFIX}Enabled to true in its configuration"
            )
        if not self.expiration:
            return None
        try:
            expires = parse_expiration(self.expiration)
        except ValueError:
            return 409, f"{_PREFIX}AccountExpiration {self.expiration!r} is not a date and time"
        if (now or datetime.datetime.now(datetime.UTC)) >= expires:
            return 403, (
                f"the remote access account {self.username or '(unnamed)'} expired on "
                f"{expires:%Y-%m-%d %H:%M:%S} UTC; set a later {_PREFIX}AccountExpiration"
            )
        return None


def parse_expiration(text: str) -> datetime.datetime:
    """Azure's AccountExpiration (``2027-01-01T23:59:59.0000000+00:00``: seven fraction digits)."""
    text = text.strip()
    if "." in text:
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        tail = tail[:digits][:6] + tail[digits:]
        text = f"{head}.{tail}"
    parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Vm:
    """Where sessions run: the VM's disk, its account and the fabric's state folder."""

    disk: VmDisk
    uid: int | None
    state_dir: str
    #: the instance's Azure id (``Web_IN_0``)
    instance_id: str
    python: str = sys.executable

    def environment(self) -> dict[str, str]:
        """The session's environment: PATH, the role's TEMP and RoleEnvironment."""
        env = {
            "PATH": _path_with(
                os.path.dirname(self.python), os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
            ),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(self.disk.approot),
            "RoleRoot": str(self.disk.approot.parent),
            "RoleInstanceID": self.instance_id,
            "RoleName": self.disk.role,
            "RoleDeploymentID": self.disk.deployment_id,
            "RoleEnvironmentFile": str(self.disk.config_file),
            **role_temp_env(self.disk),
        }
        if self.uid is not None and self.state_dir:
            env.update(vm_sandbox(self.disk, self.state_dir).as_environ())
        return env


def _path_with(folder: str, path: str) -> str:
    """``path`` with ``folder`` first: ``python`` in a session is the fabric's interpreter (its
    venv, with the packages the role runs with), as an activated venv makes it, not whatever
    else the machine calls python (often nothing: Debian has only python3)."""
    rest = [entry for entry in path.split(os.pathsep) if entry and entry != folder]
    return os.pathsep.join([folder, *rest]) if folder else path


class _Output:
    """One stream of a session's output, kept up to MAX_OUTPUT bytes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.truncated = False

    async def drain(self, stream: anyio.abc.ByteReceiveStream) -> None:
        async for chunk in stream:
            room = MAX_OUTPUT - len(self.data)
            self.data += chunk[:room]
            self.truncated |= len(chunk) > room


async def run_session(vm: Vm, command: list[str], timeout: float) -> dict[str, Any]:
    """Run ``command`` as the VM's account; its exit status and output (see the module doc)."""
    read_end, write_end = os.pipe()  # the leader's lifeline: if the agent dies, so does the session
    leader = [vm.python, "-m", "fabric.guest.task_leader", str(read_end)]
    if vm.uid is not None:
        leader += ["--user", str(vm.uid)]
    out, err = _Output(), _Output()
    timed_out = False
    try:
        process = await anyio.open_process(
            [*leader, "--", *command],
            stdin=subprocess.DEVNULL,
            cwd=vm.disk.approot,
            env=vm.environment(),
            start_new_session=True,
            pass_fds=(read_end,),
        )
    finally:
        os.close(read_end)
    try:
        async with process, anyio.create_task_group() as tasks:
            assert process.stdout is not None and process.stderr is not None
            tasks.start_soon(out.drain, process.stdout)
            tasks.start_soon(err.drain, process.stderr)
            with anyio.move_on_after(timeout) as scope:
                await process.wait()
            timed_out = scope.cancelled_caught
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever the command left running
        os.close(write_end)
        with anyio.CancelScope(shield=True):
            await process.wait()
    return {
        "exit_status": process.returncode,
        "stdout": base64.b64encode(out.data).decode(),
        "stderr": base64.b64encode(err.data).decode(),
        "truncated": out.truncated or err.truncated,
        "timed_out": timed_out,
    }


def _log(log: Path, line: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    if not line.isprintable():  # a command's newline must not forge a line of the audit log
        line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
    with log.open("a") as file:
        file.write(f"{stamp} {line}\n")


async def serve_exec(path: Path, vm: Vm, account: Account, log: Path) -> None:
    """Answer session requests on the Unix socket ``path`` until cancelled."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with socket_address(path) as address:
        listener = await anyio.create_unix_listener(address)
    os.chmod(path, 0o600)

    sessions = 0

    async def answer(stream: anyio.abc.SocketStream) -> None:
        nonlocal sessions
        async with stream:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                line = b""
                with anyio.move_on_after(10):  # the request comes at once: a silent peer holds nothing
                    line = await _read_line(stream)
                if sessions >= MAX_SESSIONS:
                    busy = f"the instance has {MAX_SESSIONS} remote sessions open, the most it takes; end one first"
                    await stream.send(json.dumps({"refused": busy, "status": 429}).encode() + b"\n")
                    return
                sessions += 1
                try:
                    await _session(stream, line, vm, account, log)
                finally:
                    sessions -= 1

    async with listener:
        await listener.serve(answer)


async def _session(stream: anyio.abc.SocketStream, line: bytes, vm: Vm, account: Account, log: Path) -> None:
    """One connection's request line: a command's session, or a shell."""
    if _is_shell(line):
        await _shell(stream, line, vm, account, log)
        return
    reply = await _handle(line, vm, account, log)
    await stream.send(json.dumps(reply).encode() + b"\n")


async def _read_line(stream: anyio.abc.SocketStream) -> bytes:
    data = b""
    while b"\n" not in data:
        data += await stream.receive()
        if len(data) > MAX_REQUEST:
            return b""
    return data.split(b"\n", 1)[0]


def _is_shell(line: bytes) -> bool:
    try:
        request = json.loads(line)
    except ValueError:
        return False
    return isinstance(request, dict) and request.get("shell") is True


async def _shell(stream: anyio.abc.SocketStream, line: bytes, vm: Vm, account: Account, log: Path) -> None:
    """An interactive shell on a pseudo-terminal (see remote_shell)."""
    from fabric.guest.plugin_agents.remote_shell import run_shell  # it builds on this module

    request = json.loads(line)
    who = str(request.get("who", "?"))[:200]
    account = await anyio.to_thread.run_sync(Account.in_force, vm.disk.config_file, account)
    refused = account.refusal()
    if refused is not None:
        await anyio.to_thread.run_sync(_log, log, f"refused who={who} shell: {refused[1]}")
        await stream.send(json.dumps({"refused": refused[1], "status": refused[0]}).encode() + b"\n")
        return
    await stream.send(b'{"ok": true}\n')
    await anyio.to_thread.run_sync(_log, log, f"shell who={who} user={account.username or '-'}: started")
    started = anyio.current_time()
    code = await run_shell(vm, stream, request)
    seconds = anyio.current_time() - started
    await anyio.to_thread.run_sync(
        _log, log, f"shell who={who} user={account.username or '-'}: exit status {code} after {seconds:.2f} s"
    )


async def _handle(line: bytes, vm: Vm, account: Account, log: Path) -> dict[str, Any]:
    try:
        request = json.loads(line)
        command = [str(part) for part in request["command"]]
        who = str(request.get("who", "?"))[:200]
        timeout = min(float(request.get("timeout", 60)), MAX_TIMEOUT)
        if not command or timeout <= 0:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return {"refused": "the request is not a session request", "status": 400}
    shown = shlex.join(command)[:500]
    account = await anyio.to_thread.run_sync(Account.in_force, vm.disk.config_file, account)
    refused = account.refusal()
    if refused is not None:
        await anyio.to_thread.run_sync(_log, log, f"refused who={who} command={shown}: {refused[1]}")
        return {"refused": refused[1], "status": refused[0]}
    started = anyio.current_time()
    reply = await run_session(vm, command, timeout)
    seconds = anyio.current_time() - started
    ended = "timed out" if reply["timed_out"] else f"exit status {reply['exit_status']}"
    await anyio.to_thread.run_sync(
        _log,
        log,
        f"session who={who} user={account.username or '-'} command={shown}: {ended} after {seconds:.2f} s",
    )
    return reply
