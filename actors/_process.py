"""Process actors, parent side: spawn the child, talk over the link, watch it, stop it by a ladder."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.abc import TaskStatus

from ._backend import current_backend
from ._errors import ActorDead, ActorError, ProcessExited, Unresponsive
from ._fork import ForkedStart, become, can_fork
from ._link import LinkFaults, Outbox, WireReply, pump, rebuild_failure, report_bad_frame
from ._mailbox import Reply
from ._ref import Ref
from ._spawn import KILL_REAP_TIMEOUT, ChildProcess, fork_process, start_process
from ._wake import wake_between
from ._wire import (
    BadFrame,
    Frame,
    Init,
    Kind,
    append_frame,
    decode_value,
    encode_value,
)

if TYPE_CHECKING:
    from ._system import ActorSystem, ProcessOptions

logger = logging.getLogger("actors.process")

#: On a cancellation path each polite rung of the reap (the stop frame, then SIGTERM) waits at most
#: this long, whatever the actor's options say: whoever cancelled is waiting.
FORCE_REAP_STEP = 2.0
#: The whole last rung of a cancelled process actor: two polite steps, then SIGKILL and its reap.
FORCE_REAP_TIMEOUT = 2 * FORCE_REAP_STEP + KILL_REAP_TIMEOUT


class ProcessCell:
    """Runs an actor in a child process, one process per incarnation, behind one stable Ref."""

    def __init__(
        self,
        system: ActorSystem,
        name: str,
        target: str,
        options: ProcessOptions,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        parent: Ref | None = None,
        mailbox_size: int = 1000,
    ) -> None:
        if ":" not in target:
            raise ValueError(
                f"process actor target must look like 'package.module:ClassName', not {target!r}"
            )
        self.system = system
        self.name = name
        self.target = target
        self.options = options
        self.parent = parent
        self.faults = LinkFaults()
        self.outbox = Outbox(name, self.faults)
        self.deliver = self.outbox.sender()
        self.deliver_nowait = self.outbox.deliver_nowait
        self.outbox.tells_frames = True  # (the child takes them: see actors._child)
        self.deliver_many = self.outbox.deliver_many
        self.deliver_many_nowait = self.outbox.deliver_many_nowait
        self.wait_reply = self.outbox.wait_reply
        self.timer = system.timer
        self.ref = Ref(self)
        self.stop_requested = False
        self.stopped_by_owner = False
        self.incarnations = 0
        self._init = Init(
            target=target,
            name=name,
            args=[encode_value(a) for a in args],
            kwargs={k: encode_value(v) for k, v in (kwargs or {}).items()},
            has_parent=parent is not None,
            mailbox_size=mailbox_size,
            stop_timeout=options.stop_timeout,
        )
        self._process: ChildProcess | None = None
        self._wake_monitor = anyio.Event()
        self._exited = anyio.Event()
        self._exited.set()
        self._dead = anyio.Event()
        self._reason: BaseException | None = None

    # -- Target protocol ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The pid of the running child, or None between incarnations."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def request_stop(self, *, by_owner: bool = True) -> None:
        """Start the stop ladder; the owner will not restart the actor."""
        self.stop_requested = True
        self.stopped_by_owner = self.stopped_by_owner or by_owner
        self._wake_monitor.set()

    async def join(self) -> BaseException | None:
        """Wait until the actor is gone for good."""
        await self._dead.wait()
        return self._reason

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def stop_budget(self) -> float:
        """The most stop() takes: the stop message's grace, SIGTERM's, then SIGKILL's reap."""
        return self.options.stop_timeout + self.options.term_timeout + KILL_REAP_TIMEOUT

    async def stop(self) -> None:
        """Stop the child by the ladder and wait until it is reaped."""
        self.request_stop()
        await self._exited.wait()

    def close(self, reason: BaseException | None) -> None:
        """The actor will not run again: fail queued asks and senders with ActorDead."""
        if self._dead.is_set():
            return
        self._reason = reason
        self.outbox.close()
        self._dead.set()

    async def run(self, *, task_status: TaskStatus[Ref] = anyio.TASK_STATUS_IGNORED) -> BaseException | None:
        """Run one incarnation: spawn, handshake, serve until the child ends or is stopped.

        Returns None for a requested stop or a clean exit, else why the child failed.
        Raises ActorError or ProcessExited (before ``task_status.started``) if it cannot start.
        """
        self._exited = anyio.Event()
        self._wake_monitor = anyio.Event()
        self.incarnations += 1
        ours, theirs = socket.socketpair()
        process: ChildProcess | None = None
        try:
            process = await self._launch(theirs)
            theirs.close()
            self._process = process
            incarnation = _Incarnation(self, process, ours)
            return await incarnation.serve(task_status)
        finally:
            theirs.close()
            with anyio.move_on_after(FORCE_REAP_TIMEOUT, shield=True) as reaping:
                if process is not None:
                    await _force_reap(process, self.options, ours)
            if reaping.cancel_called:
                logger.error(
                    "process actor %r (pid %s) was not reaped within %g s after SIGKILL; leaving it",
                    self.name,
                    process.pid if process is not None else "?",
                    FORCE_REAP_TIMEOUT,
                )
            ours.close()
            self.outbox.lose_written()
            self._exited.set()

    async def _launch(self, theirs: socket.socket) -> ChildProcess:
        opts = self.options
        fd = theirs.fileno()
        command = [
            opts.python or sys.executable,
            "-m",
            "actors._child",
            str(fd),
            str(os.getpid()),
            current_backend(),  # the child runs the same backend
            # The actor's name, so that ps, top and chaos tools can tell the processes apart.
            self.name,
        ]
        if opts.run_as is not None:
            command.append(str(opts.run_as))
            # Its code is another account's (a VM's role): the type names of its answers must
            # not make this process import a module, as a node on the network's cannot.
            self.outbox.imports = False
        env = dict(os.environ) if opts.inherit_env else {}
        env.update(opts.env or {})
        if opts.run_as is not None and opts.sandbox is not None:
            env.update(opts.sandbox.as_environ())
        env["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, env.get("PYTHONPATH", "")] if p)
        # Opening a log file is a local, non-blocking-in-practice call; the child keeps the fd.
        log = open(opts.log_path, "ab", buffering=0) if opts.log_path else None  # noqa: SIM115, ASYNC230
        try:
            if opts.template is not None:
                forked = await opts.template.fork(
                    ForkedStart(
                        argv=command,
                        env=env,
                        cwd=os.fspath(opts.cwd) if opts.cwd is not None else None,
                        new_session=opts.new_session,
                        log_fd=log.fileno() if log is not None else None,
                        keep_fds=(fd, *opts.pass_fds),
                    )
                )
                if forked is not None:
                    return forked
            if can_fork(opts.run_as, opts.python, " ".join(command)):
                # As exec would fail (a local stat, like the open above).
                if opts.cwd is not None and not os.path.isdir(opts.cwd):  # noqa: ASYNC240
                    raise FileNotFoundError(f"working directory {os.fspath(opts.cwd)!r} does not exist")
                start = ForkedStart(
                    argv=command,
                    env=env,
                    cwd=os.fspath(opts.cwd) if opts.cwd is not None else None,
                    new_session=opts.new_session,
                    log_fd=log.fileno() if log is not None else None,
                    keep_fds=(fd, *opts.pass_fds),
                )
                return await fork_process(lambda: become(start))
            return await start_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=opts.cwd,
                env=env,
                start_new_session=opts.new_session,
                pass_fds=(fd, *opts.pass_fds),
            )
        finally:
            if log is not None:
                log.close()


class _Incarnation:
    """One child process of a ProcessCell, from handshake to reaping."""

    def __init__(self, cell: ProcessCell, process: ChildProcess, sock: socket.socket) -> None:
        self.cell = cell
        self.process = process
        self.sock = sock
        self.started = anyio.Event()
        self.ended = anyio.Event()
        self.start_failure: BaseException | None = None
        self.crash: BaseException | None = None
        self.unresponsive = False
        self.pong = anyio.Event()
        send, receive = anyio.create_memory_object_stream[tuple[Any, Reply | None]](1000)
        self._relay_send, self._relay_receive = send, receive

    async def serve(self, task_status: TaskStatus[Ref]) -> BaseException | None:
        cell, opts = self.cell, self.cell.options
        cell.outbox.control(Kind.INIT, 0, cell._init)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump)
            tg.start_soon(self._watch_exit)
            tg.start_soon(self._relay)
            with anyio.move_on_after(opts.start_timeout):
                await _first(self.started, self.ended)
            if self.started.is_set():
                task_status.started(cell.ref)
                if opts.ping_interval:
                    tg.start_soon(self._ping, opts.ping_interval, opts.ping_timeout)
                await _first(self.ended, cell._wake_monitor)
                await self._ladder()
            elif self.ended.is_set() and self.start_failure is None:
                # The link closed as the child exited: wait for its exit code, so the error
                # says it exited (and points at its log) rather than that it was slow.
                with anyio.move_on_after(opts.term_timeout):
                    await self.process.wait()
            tg.cancel_scope.cancel()
        if not self.started.is_set():
            # Raised here, outside the task group, so that the caller of spawn sees the error
            # itself rather than an exception group around it.
            raise self._start_error()
        return self._reason()

    def _start_error(self) -> BaseException:
        if self.start_failure is not None:
            return self.start_failure
        if self.process.returncode is not None:
            return ProcessExited(self.cell.name, self.process.returncode, "before it started (see its log)")
        return ActorError(
            "StartTimeout",
            f"{self.cell.name!r} did not start within {self.cell.options.start_timeout} s",
        )

    def _reason(self) -> BaseException | None:
        if self.unresponsive:
            return Unresponsive(f"process actor {self.cell.name!r} stopped answering pings")
        if self.cell.stop_requested:
            return None
        if self.crash is not None:
            return self.crash
        code = self.process.returncode
        return None if code == 0 else ProcessExited(self.cell.name, code)

    async def _ladder(self) -> None:
        """Stop message, grace, SIGTERM, grace, SIGKILL; the process is always reaped."""
        process, opts = self.process, self.cell.options
        if process.returncode is None and not self.unresponsive:
            self.cell.outbox.control(Kind.STOP, 0, None)
            with anyio.move_on_after(opts.stop_timeout):
                await process.wait()
        if process.returncode is None and not self.unresponsive:
            logger.warning("%r ignored the stop message; sending SIGTERM", self.cell.name)
            _signal(process, signal.SIGTERM, opts.new_session)
            with anyio.move_on_after(opts.term_timeout):
                await process.wait()
        if process.returncode is None:
            _signal(process, signal.SIGKILL, opts.new_session)
            await process.wait()
        elif opts.new_session:
            _signal(process, signal.SIGKILL, True)  # whatever is left of its process group

    async def _pump(self) -> None:
        outbox = self.cell.outbox
        await pump(
            self.sock,
            outbox,
            self._on_frame,
            lambda exc, frame: report_bad_frame(outbox, exc, frame),
        )
        self.ended.set()

    async def _watch_exit(self) -> None:
        await self.process.wait()
        self.ended.set()

    async def _ping(self, interval: float, timeout: float) -> None:
        ident = 0
        while True:
            # Due from half the interval on, sent when this process is awake anyway (a message
            # came); an idle process wakes by itself for it only after the whole interval.
            await wake_between(interval / 2, interval)
            ident += 1
            self.pong = anyio.Event()
            self.cell.outbox.control(Kind.PING, ident, None)
            with anyio.move_on_after(timeout):
                await self.pong.wait()
            if not self.pong.is_set():
                logger.error("%r did not answer a ping within %.1f s", self.cell.name, timeout)
                self.unresponsive = True
                self.ended.set()
                return

    async def _relay(self) -> None:
        """Deliver the child's messages to its parent actor, apart from the reader so that
        a busy parent cannot stall replies coming back from the child."""
        parent = self.cell.parent
        async for message, reply in self._relay_receive:
            if parent is None:
                if reply is not None:
                    reply.reject(ActorDead(f"{self.cell.name!r} has no parent to ask"))
                continue
            try:
                await parent._target.deliver(message, reply)
            except ActorDead as exc:
                if reply is not None:
                    reply.reject(exc)

    def _on_frame(self, frame: Frame) -> Awaitable[None] | None:
        """Handle a frame from the child; return an awaitable only when that must wait."""
        kind, outbox = frame.kind, self.cell.outbox
        if outbox.settle(frame):
            pass
        elif kind == Kind.TELL or kind == Kind.ASK:
            message = decode_value(frame.type, frame.body)
            reply = WireReply(outbox, frame.id) if kind == Kind.ASK else None
            try:
                self._relay_send.send_nowait((message, reply))
            except anyio.WouldBlock:
                return self._relay_send.send((message, reply))
        elif kind == Kind.PONG:
            self.pong.set()
        elif kind == Kind.STARTED:
            decode_value("actors._wire:Started", frame.body)
            self.started.set()
        elif kind == Kind.CRASHED:
            failure = decode_value("actors._wire:Failure", frame.body)
            error = rebuild_failure(failure)
            if self.started.is_set():
                self.crash = error
            else:
                self.start_failure = error
                self.ended.set()
        else:
            raise BadFrame(f"unexpected frame kind {kind} from a child")
        return None


async def _first(*events: anyio.Event) -> None:
    """Wait until any of the events is set."""
    async with anyio.create_task_group() as tg:
        for event in events:

            async def wait(e: anyio.Event = event) -> None:
                await e.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(wait)


def _signal(process: ChildProcess, signum: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
    except (ProcessLookupError, PermissionError):
        pass


async def _force_reap(process: ChildProcess, options: ProcessOptions, sock: socket.socket) -> None:
    """The last rung, for cancellation paths: ask once by a raw write, then TERM and KILL."""
    if process.returncode is not None:
        return
    stop = bytearray()
    append_frame(stop, Kind.STOP, 0, None)
    try:
        sock.setblocking(False)
        sock.send(stop)
    except OSError:
        pass
    with anyio.move_on_after(min(options.stop_timeout, FORCE_REAP_STEP)):
        await process.wait()
    if process.returncode is None:
        _signal(process, signal.SIGTERM, options.new_session)
        with anyio.move_on_after(min(options.term_timeout, FORCE_REAP_STEP)):
            await process.wait()
    if process.returncode is None:
        _signal(process, signal.SIGKILL, options.new_session)
        await process.wait()
