"""Process actors, child side: ``python -m actors._child FD PARENT_PID BACKEND NAME [USER]``.

The child adopts the socket its parent made, dies with its parent, builds the actor named in
the INIT frame, serves it, and exits 0 after a requested stop or 1 after a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable
from typing import Any

import anyio
import anyio.abc

from . import _stall
from ._actor import Actor
from ._cell import LocalCell
from ._errors import ActorDead, MailboxFull
from ._link import (
    LinkFaults,
    Outbox,
    WireReply,
    describe_failure,
    pump,
    report_bad_frame,
)
from ._mailbox import Reply
from ._ref import Ref
from ._system import ActorSystem, open_system
from ._timer import AskTimer
from ._wire import BadFrame, Batch, Frame, Init, Kind, Started, decode_value, decode_values

logger = logging.getLogger("actors.child")

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when our parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class _Parent:
    """The parent end of the link, seen from the child as a Ref target."""

    def __init__(self, outbox: Outbox, timer: AskTimer) -> None:
        self.name = "parent"
        self._outbox = outbox
        self.gone = anyio.Event()
        self.faults = None
        self.timer = timer
        self.wait_reply = outbox.wait_reply

    async def deliver(self, message: Any, reply: Reply | None) -> None:
        await self._outbox.deliver(message, reply)

    def deliver_nowait(self, message: Any, reply: Reply | None) -> None:
        self._outbox.deliver_nowait(message, reply)

    def request_stop(self) -> None:
        """A child cannot stop its parent."""

    async def join(self) -> BaseException | None:
        await self.gone.wait()
        return None

    @property
    def pid(self) -> int | None:
        return os.getppid()


class _Child:
    """Serves the one actor of this process over the link to the parent."""

    def __init__(self, system: ActorSystem, outbox: Outbox, task_group: anyio.abc.TaskGroup) -> None:
        self.system = system
        self.outbox = outbox
        self.task_group = task_group
        self.parent = _Parent(outbox, system.timer)
        self.ref: Ref | None = None
        self.ready = anyio.Event()
        self.done = anyio.Event()
        self.exit_code = 0
        self.stop_requested = False

    async def start(self, init: Init) -> None:
        try:
            actor_class = _import(init.target)
            args = [decode_value(name, raw) for name, raw in init.args]
            kwargs = {key: decode_value(name, raw) for key, (name, raw) in init.kwargs.items()}
            parent = Ref(self.parent) if init.has_parent else None

            def build() -> Actor:
                return actor_class(*args, **kwargs)

            self.ref = await self.system._root.spawn(
                build,
                name=init.name,
                mailbox_size=init.mailbox_size,
                parent=parent,
                # The parent's ladder waits this long before SIGTERM: let on_stop use it all.
                stop_timeout=init.stop_timeout,
            )
        except Exception as exc:
            logger.error("cannot start %s: %r", init.target, exc)
            self.outbox.control(Kind.CRASHED, 0, describe_failure(exc))
            self.exit_code = 1
            self.done.set()
            return
        # From its next idle moment the actor reads the link itself (see LocalCell._serve).
        cell = self.ref._target
        assert isinstance(cell, LocalCell)
        cell.link = self.outbox
        self.outbox.control(Kind.STARTED, 0, Started(pid=os.getpid()))
        self.ready.set()
        if self.stop_requested:
            self.ref.request_stop()
        reason = await self.ref.join()
        if reason is not None:
            # In order after what the actor already told its parent, not ahead of it.
            self.outbox.send_ordered(Kind.CRASHED, 0, describe_failure(reason))
            self.exit_code = 1
        self.done.set()

    async def _deliver(self, message: Any, reply: Reply | None) -> None:
        """Deliver once the actor has started and its mailbox has room."""
        await self.ready.wait()
        assert self.ref is not None
        try:
            await self.ref._target.deliver(message, reply)
        except ActorDead as exc:
            if reply is not None:
                reply.reject(exc)

    async def _deliver_many(self, messages: list[Any]) -> None:
        """Deliver tells once the actor has started, as room comes (see Mailbox.put_many)."""
        await self.ready.wait()
        assert self.ref is not None
        with contextlib.suppress(ActorDead):
            await self.ref._target.deliver_many(messages)  # type: ignore[attr-defined]

    def on_tells(self, batch: Batch) -> Awaitable[None] | None:
        """Handle a TELLS frame from the parent (Ref.tell_many): its tells into the mailbox at
        once, as far as they fit; return an awaitable that delivers the rest."""
        messages = decode_values(batch.type, batch.body)
        if self.ref is None:  # the actor is still starting
            return self._deliver_many(messages)
        cell = self.ref._target
        assert isinstance(cell, LocalCell)
        try:
            taken = cell.deliver_some_nowait(messages, 0)
        except ActorDead:
            return None
        return None if taken == len(messages) else self._deliver_many(messages[taken:])

    def stop(self) -> None:
        self.stop_requested = True
        if self.ref is not None:
            self.ref.request_stop()
        elif not self.ready.is_set():
            self.done.set()

    def on_frame(self, frame: Frame) -> Awaitable[None] | None:
        """Handle a frame from the parent; return an awaitable only when that must wait."""
        kind, outbox = frame.kind, self.outbox
        if kind == Kind.TELL or kind == Kind.ASK:
            message = decode_value(frame.type, frame.body)
            reply = WireReply(outbox, frame.id) if kind == Kind.ASK else None
            if self.ref is None:  # the actor is still starting
                return self._deliver(message, reply)
            try:
                self.ref._target.deliver_nowait(message, reply)
            except MailboxFull:
                return self._deliver(message, reply)
            except ActorDead as exc:
                if reply is not None:
                    reply.reject(exc)
        elif outbox.settle(frame):
            pass
        elif kind == Kind.PING:
            outbox.control(Kind.PONG, frame.id, None)
        elif kind == Kind.STOP:
            self.stop()
        elif kind == Kind.INIT:
            self.task_group.start_soon(self.start, decode_value("actors._wire:Init", frame.body))
        else:
            raise BadFrame(f"unexpected frame kind {kind} from the parent")
        return None


def _import(target: str) -> type[Actor]:
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Actor)):
        raise TypeError(f"{target} is not an Actor subclass")
    return obj


async def _serve(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    outbox = Outbox("parent", LinkFaults())
    async with open_system() as system, anyio.create_task_group() as tg:
        child = _Child(system, outbox, tg)

        async def run_link() -> None:
            await pump(
                sock,
                outbox,
                child.on_frame,
                lambda exc, frame: report_bad_frame(outbox, exc, frame),
                on_tells=child.on_tells,
            )
            # EOF: the parent is gone or dropped us; nobody is left to serve, nor to read what
            # the actor tells or asks it (those waiting for room or answers: ActorDead).
            outbox.close()
            child.parent.gone.set()
            child.stop()

        tg.start_soon(run_link)
        await child.done.wait()
        # Flush what is left (the crash report, last replies) before the process ends.
        remaining = bytes(outbox.control_buffer + outbox.buffer)
        tg.cancel_scope.cancel()
    if remaining:
        try:
            sock.setblocking(True)
            sock.settimeout(2.0)
            sock.sendall(remaining)
        except OSError:
            pass
    return child.exit_code


def run(argv: list[str]) -> int:
    """Serve the actor of a child process; ``argv`` is ``FD PARENT_PID BACKEND NAME [USER]``.
    Returns the exit code."""
    fd, parent_pid, backend = int(argv[0]), int(argv[1]), argv[2]
    die_with_parent(parent_pid)
    _stall.child_started(argv[3])  # stalls are reported under the actor this process serves
    if len(argv) > 4:
        from ._privileges import PrivilegeError, drop_privileges
        from ._sandbox import Sandbox

        try:
            drop_privileges(int(argv[4]) if argv[4].isdigit() else argv[4], Sandbox.take())
        except PrivilegeError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2
        die_with_parent(parent_pid)  # changing user cleared the parent-death signal
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    code: int = anyio.run(_serve, fd, backend=backend)
    return code


def main() -> None:
    """Entry point of an exec'd child process."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
