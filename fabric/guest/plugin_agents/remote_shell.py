"""Interactive remote shells, served by the RemoteAccess plugin agent beside its exec sessions.

After the request line (``{"shell": true, "who", "rows", "cols"}``) and the agent's ``{"ok":
true}``, both sides exchange frames: a kind byte, a 4-byte big-endian length, the payload.

    d  terminal data (keys one way, screen output the other)
    r  a window size, "ROWS COLS"            (to the agent)
    s  a signal for the foreground process group, "INT", "TERM", "HUP"   (to the agent)
    x  the shell's exit status, "N", last    (from the agent)

The shell (bash, else sh, interactive) runs on a pseudo-terminal as the role's account in the
VM's sandbox, started by fabric.guest.pty_leader; Ctrl-C typed reaches its foreground process
group through the terminal as on any terminal. When the shell exits, or the connection drops,
every process of its session is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import struct
import termios
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from fabric.guest.plugin_agents.remote_exec import Vm

#: the largest frame either side sends
MAX_FRAME = 64 * 1024
#: the largest terminal
MAX_ROWS_COLS = 1000
_HEADER = struct.Struct("!cI")
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "HUP": signal.SIGHUP, "QUIT": signal.SIGQUIT}


def frame(kind: bytes, payload: bytes) -> bytes:
    """One frame of the shell protocol."""
    return _HEADER.pack(kind, len(payload)) + payload


async def read_frame(stream: BufferedByteReceiveStream) -> tuple[bytes, bytes]:
    """The next (kind, payload); raises ValueError for a frame over MAX_FRAME."""
    kind, length = _HEADER.unpack(await stream.receive_exactly(_HEADER.size))
    if length > MAX_FRAME:
        raise ValueError(f"a frame of {length} bytes is over {MAX_FRAME}")
    return kind, (await stream.receive_exactly(length) if length else b"")


def set_window(fd: int, rows: int, cols: int) -> None:
    """Give the terminal a size (its foreground group gets SIGWINCH)."""
    rows, cols = max(1, min(rows, MAX_ROWS_COLS)), max(1, min(cols, MAX_ROWS_COLS))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def end_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (blocking: it reads /proc)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(name)) == sid:
                    os.kill(int(name), signal.SIGKILL)


async def run_shell(vm: Vm, stream: anyio.abc.ByteStream, request: dict[str, Any]) -> int:
    """Run the shell for one connection; its exit status (the x frame is sent too)."""
    master, slave = os.openpty()
    set_window(master, int(request.get("rows", 24)), int(request.get("cols", 80)))
    shell = shutil.which("bash") or "/bin/sh"
    leader = [vm.python, "-m", "fabric.guest.pty_leader"]
    if vm.uid is not None:
        leader += ["--user", str(vm.uid)]
    env = {**vm.environment(), "TERM": str(request.get("term", "xterm"))[:40]}
    try:
        process = await anyio.open_process(
            [*leader, "--", shell, "-i"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=vm.disk.approot,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    incoming = BufferedByteReceiveStream(stream)

    async def screen() -> None:
        while True:
            await anyio.wait_readable(master)
            try:
                data = os.read(master, MAX_FRAME)
            except BlockingIOError:
                continue
            except OSError:  # EIO: no process holds the terminal any more
                return
            if not data:
                return
            await stream.send(frame(b"d", data))

    async def keys() -> None:
        with contextlib.suppress(
            anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, ValueError
        ):
            while True:
                kind, payload = await read_frame(incoming)
                if kind == b"d":
                    await anyio.to_thread.run_sync(os.write, master, payload)
                elif kind == b"r":
                    rows, cols = (int(n) for n in payload.split()[:2])
                    set_window(master, rows, cols)
                elif kind == b"s" and payload.decode() in SIGNALS:
                    with contextlib.suppress(OSError):
                        os.killpg(os.tcgetpgrp(master), SIGNALS[payload.decode()])
        # The client went away: hang the session up.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGHUP)

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(keys)
            output = anyio.Event()

            async def screen_then_set() -> None:
                try:
                    await screen()
                finally:
                    output.set()

            tasks.start_soon(screen_then_set)
            await process.wait()
            await anyio.to_thread.run_sync(end_session, process.pid)
            with anyio.move_on_after(2):
                await output.wait()  # what the shell wrote last
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(end_session, process.pid)
            await process.wait()
            os.close(master)
    code = process.returncode if process.returncode is not None else -1
    code = code if code >= 0 else 128 - code
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(frame(b"x", str(code).encode()))
    return code
