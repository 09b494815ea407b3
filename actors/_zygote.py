"""A warm template process that starts process actors by fork, as Android's zygote starts apps.

A process actor that runs as another user (``run_as``) is exec'd, so that it never starts with a
copy of a privileged parent's memory; that costs an interpreter start and every import again
(~0.2 s here). A template keeps the guarantee and the speed: it is itself exec'd as that user,
enters the sandbox and drops every privilege first thing (as an exec'd child does), imports the
library code its children will run (the ``preload`` modules), and then only waits. Asked to
start a child, it forks one; the child sheds the template's state exactly as a forked process
actor sheds its parent's (actors/_fork.py) and serves the actor as ``actors._child`` would. What
a child inherits is therefore an interpreter that imported library code as that user and was
never handed a message, a configuration or a secret: the child's environment, command line,
working folder, log and sockets all arrive with the request and exist only in the child.

The child is made with ``clone(CLONE_PARENT)``: it is the *parent's* child, not the template's,
so the parent reaps it, sees its exit code, signals its process group, and the child's
PR_SET_PDEATHSIG ties it to the parent exactly as if the parent had forked it. The template is
single-threaded, so the clone copies no lock held by another thread.

Linux only (x86_64 and aarch64); elsewhere, or when the template cannot start or has died, the
parent execs the child as before (``fork`` answers None).

Seeds. A template started with ``seeds=True`` (one per host, running as root, for the VMs'
first processes) plants a *seed* in each child it forks, before that child has read anything
but its own start request: a plain fork of the child, still clean, that waits on a socket.
``Template.seeded()`` hands the child its seed as a one-shot template: asked for a child, the
seed becomes that child itself (a VM's bootstrapper), after planting a seed of its own, which
``Template.adopt`` later turns into the child's template (enter the sandbox, drop to the user,
serve forks). So a VM's bootstrapper and its role host template are copies of the host's
template, sharing its pages with every VM of the host, and no VM process execs an interpreter;
without a seed (a restarted bootstrapper, a dead template) everything is forked or exec'd as
before.

Protocol, over a SOCK_SEQPACKET socketpair: the template sends ``ready ROOM`` once it has
imported everything (ROOM: the longest command line a child can show); each request is one JSON
packet carrying the ForkedStart and the descriptors it names (SCM_RIGHTS), answered with the
child's pid as text (``0``: refused, exec instead). The template reads a request into a buffer
it wipes once the child is forked, and only the child parses it.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import functools
import gc
import json
import logging
import mmap
import os
import platform
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from . import _spawn
from ._actor import Actor
from ._fork import ForkedStart, _close_all_but, _title_room, become
from ._request import Request
from ._sandbox import Sandbox
from ._spawn import ChildProcess, start_process

logger = logging.getLogger("actors.zygote")

_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(platform.machine())
_CLONE_PARENT = 0x00008000
_SIGCHLD = 17
#: How long a template may take to import its preload modules, and to answer one request.
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 5.0
_MAX_FDS = 64
_PACKET = 1 << 18  # a request: a command line and an environment


def available() -> bool:
    """Whether templates can be used on this system."""
    return sys.platform.startswith("linux") and _SYS_CLONE is not None


class Template:
    """The parent's handle on one template process (see the module docstring).

    Start it with ``await Template.start(...)``; hand it to the process actors that should be
    forked from it (``ProcessOptions.template``); ``close`` it when done. One request at a time.
    """

    def __init__(
        self,
        name: str,
        process: ChildProcess,
        sock: socket.socket,
        run_as: str | int,
        *,
        one_shot: bool = False,
    ) -> None:
        self.name = name
        self.process = process
        self.sock = sock
        self.run_as = run_as
        self.forks = 0
        #: how long a command line a child can show (the template's own, with its environment)
        self.room = 0
        self._lock = anyio.Lock()
        self._broken = False
        #: a seed (see the module docstring): it becomes its one child, whose process it then is
        self.one_shot = one_shot

    @property
    def alive(self) -> bool:
        """Whether the template can still be asked to fork."""
        return not self._broken and self.process.returncode is None

    @property
    def pid(self) -> int:
        """The template's own pid."""
        return self.process.pid

    @classmethod
    async def start(
        cls,
        name: str,
        *,
        run_as: str | int,
        sandbox: Sandbox | None,
        preload: Sequence[str],
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        python: str | None = None,
        seeds: bool = False,
    ) -> Template:
        """Exec a template as ``run_as`` in ``sandbox`` that imports ``preload``, and wait until
        it has. ``env`` is its whole environment besides the import path: give it nothing
        secret (it is what every child starts with until its own environment replaces it).
        ``seeds``: plant a seed in every child (see the module docstring); ``run_as`` is then
        our own user, and the template keeps every privilege we have.

        Raises:
            OSError: it could not start, or exited (its log says why) or stayed silent.
        """
        if not available():
            raise OSError(f"process templates need Linux on x86_64 or aarch64, not {platform.machine()}")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        environ = dict(os.environ if env is None else env)
        environ["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, environ.get("PYTHONPATH", "")] if p)
        if sandbox is not None:
            environ.update(sandbox.as_environ())
        command = [
            python or sys.executable,
            "-m",
            "actors._template",
            str(theirs.fileno()),
            str(os.getpid()),
            name,
            str(run_as),
            ",".join(preload),
            *(["seeds"] if seeds else []),
        ]
        log = open(log_path, "ab", buffering=0) if log_path else None  # noqa: SIM115, ASYNC230
        try:
            process = await start_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=cwd,
                env=environ,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            if log is not None:
                log.close()
        ours.setblocking(False)
        return await cls(name, process, ours, run_as)._ready()

    async def _ready(self) -> Template:
        try:
            with anyio.fail_after(START_TIMEOUT):
                answer = await self._receive()
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise OSError(f"template {self.name!r} did not start: {exc}") from None
        word, _, room = answer.partition(b" ")
        if word != b"ready" or not room.isdigit():
            await self.close()
            code = self.process.returncode
            raise OSError(f"template {self.name!r} exited before it was ready (code {code}; see its log)")
        self.room = int(room)
        return self

    @classmethod
    def seeded(cls, name: str) -> Template | None:
        """This process's seed as a one-shot template, which becomes the first child it is asked
        for (see the module docstring); None when this process has no seed (any more)."""
        seed = _take_seed()
        if seed is None:
            return None
        pid, sock = seed
        template = cls(name, ChildProcess(pid=pid), sock, os.geteuid(), one_shot=True)
        template.room = _title_room()
        return template

    @classmethod
    async def adopt(
        cls,
        name: str,
        *,
        run_as: str | int,
        sandbox: Sandbox | None,
        preload: Sequence[str],
        log_path: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> Template | None:
        """Turn this process's seed into a template, as ``start`` would start one (the same
        user, sandbox, imports, log and working folder, and the same command line); None when
        this process has no seed (then ``start`` one).

        Raises:
            OSError: the seed could not become a template (its log says why).
        """
        seed = _take_seed()
        if seed is None:
            return None
        pid, sock = seed
        template = cls(name, ChildProcess(pid=pid), sock, run_as)
        request = {
            "argv": [
                sys.executable,
                "-m",
                "actors._template",
                "0",
                str(os.getpid()),
                name,
                str(run_as),
                ",".join(preload),
            ],
            "user": str(run_as),
            "sandbox": sandbox.as_environ() if sandbox is not None else {},
            "preload": list(preload),
            "cwd": os.fspath(cwd) if cwd is not None else None,
        }
        log = open(log_path, "ab", buffering=0) if log_path else None  # noqa: SIM115, ASYNC230
        try:
            socket.send_fds(sock, [json.dumps(request).encode()], [log.fileno()] if log is not None else [])
        except OSError as exc:
            await template.close()
            raise OSError(f"template {name!r} did not start from its seed: {exc}") from None
        finally:
            if log is not None:
                log.close()
        return await template._ready()

    async def fork(self, start: ForkedStart) -> ChildProcess | None:
        """Have the template fork a child that becomes ``start`` (its ``keep_fds`` and
        ``log_fd`` are the parent's descriptors, passed along); None when the template cannot
        (dead, or the command line would not fit): exec the child instead."""
        async with self._lock:
            if not self.alive or len(" ".join(start.argv).encode()) >= self.room:
                return None  # the child could not show its whole command line: exec it
            fds = [start.log_fd] if start.log_fd is not None else []
            fds.extend(start.keep_fds)
            request = {
                "argv": list(start.argv),
                "env": dict(start.env),
                "cwd": start.cwd,
                "new_session": start.new_session,
                "log": start.log_fd is not None,
                "keep": list(start.keep_fds),
            }
            try:
                with anyio.fail_after(REQUEST_TIMEOUT):
                    await anyio.wait_writable(self.sock)
                    socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
                    answer = await self._receive()
                pid = int(answer or b"0")
            except (OSError, ValueError, TimeoutError) as exc:
                logger.warning("template %r failed a request (%r): exec'ing instead", self.name, exc)
                self._broken = True
                return None
            if pid <= 0:
                if not answer:
                    self._broken = True
                return None
            if not _is_new_child(pid, self.run_as):
                # The template runs as the child's user, and that user's code could bend it:
                # never act (wait, signal) on a pid it names unless it is a child of ours.
                logger.error("template %r answered pid %d, not a child of ours: not using it", self.name, pid)
                self._broken = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    self.process.kill()
                return None
            self.forks += 1
            if self.one_shot:
                self._broken = True  # the seed is that child now: never wait on it or kill it here
                self.sock.close()
            return ChildProcess(pid=pid)

    async def _receive(self) -> bytes:
        while True:
            try:
                return self.sock.recv(_PACKET)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)

    async def close(self) -> None:
        """End the template (its children live on) and reap it."""
        spent = self.one_shot and self.forks > 0
        self._broken = True
        self.sock.close()
        if spent:
            return
        with anyio.move_on_after(2.0, shield=True):
            await self.process.wait()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self.process.kill()
            with anyio.move_on_after(_spawn.KILL_REAP_TIMEOUT, shield=True):
                await self.process.wait()


def _is_new_child(pid: int, user: str | int) -> bool:
    """Whether ``pid`` is a child of this process (not yet reaped, so it cannot be another
    process by now) running as ``user``."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    if isinstance(user, str) and not user.isdigit():
        return True  # a named user: its uid was checked when the template dropped to it
    try:
        with open(f"/proc/{pid}/status") as status:
            uids = next((line.split()[1:] for line in status if line.startswith("Uid:")), [])
    except OSError:
        return True  # exited already: a zombie child of ours, harmless to reap
    return bool(uids) and all(int(u) == int(user) for u in uids)


# -- the template process ---------------------------------------------------------------------


def _clone_sibling() -> int:
    """fork(2), but the child's parent is our parent (CLONE_PARENT); keeps the GIL throughout
    and tells the interpreter about the fork as os.fork does."""
    import ctypes

    libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across the call
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = libc.syscall(_SYS_CLONE, _CLONE_PARENT | _SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
    else:
        api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "clone(CLONE_PARENT) failed")
    return int(pid)


def _place_fds(received: list[int], targets: list[int]) -> None:
    """Put each received descriptor at the number the parent gave it (the child's command line
    and configuration name them by those numbers)."""
    top = max([*targets, *received, 2]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, top) for fd in received]
    for fd in received:
        os.close(fd)
    for fd, target in zip(moved, targets, strict=True):
        os.dup2(fd, target)  # the copy is inheritable, as a passed descriptor is
        os.close(fd)


#: This process's seed, planted at its birth: (pid, our end of its socket); see ``_plant``.
_seed: tuple[int, socket.socket] | None = None


def _take_seed() -> tuple[int, socket.socket] | None:
    global _seed
    seed, _seed = _seed, None
    if seed is not None:
        seed[1].setblocking(False)
    return seed


def _plant(serve: Callable[[socket.socket, int], int]) -> int:
    """Fork a seed of this process (single-threaded, clean: called before it has read anything
    but its own start request) that runs ``serve``; keep its socket as ``_seed`` and return
    that socket's descriptor (the caller keeps it open). The seed dies with us."""
    global _seed
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        from ._child import die_with_parent

        ours.close()
        die_with_parent(parent)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        _close_all_but({0, 1, 2, theirs.fileno()})
        os._exit(_spawn._exit_code_of(functools.partial(serve, theirs, parent)))
    theirs.close()
    _seed = (pid, ours)
    return ours.fileno()


def _serve_seed(sock: socket.socket, parent: int) -> int:
    """A seed of a VM's first process: become the first child it asks for (answering our own
    pid, as a template answers its child's), after planting a template seed of our own."""
    try:  # (recvmsg touches only the pages the request fills: a seed stays small)
        message, ancillary, flags, _ = sock.recvmsg(_PACKET, socket.CMSG_SPACE(_MAX_FDS * 4))
    except OSError:
        return 0
    fds = _received_fds(ancillary)
    if not message or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            sock.send(b"0")
        return 0
    sock.send(str(os.getpid()).encode())
    return _become_child(sock, message, fds, plant=_serve_template_seed)


def _serve_template_seed(sock: socket.socket, parent: int) -> int:
    """A seed of a bootstrapper: become its template when it asks (see ``Template.adopt``)."""
    try:
        message, ancillary, _, _ = sock.recvmsg(_PACKET, socket.CMSG_SPACE(4))
    except OSError:
        return 0
    fds = _received_fds(ancillary)
    if not message:
        return 0
    request = json.loads(message)
    del message
    if fds:
        os.dup2(fds[0], 1)
        os.dup2(fds[0], 2)
        os.close(fds[0])
    if request["cwd"] is not None:
        os.chdir(request["cwd"])
    os.environ.update(request["sandbox"])
    _become_template(sock, parent, request["user"], request["preload"], request["argv"])
    return _serve_forks(sock)


def _become_template(
    sock: socket.socket, parent: int, user: str, preload: Sequence[str], title: Sequence[str] | None
) -> None:
    """Drop to ``user`` in the sandbox the environment names (unless we are that user already,
    with no sandbox), import ``preload`` and freeze what we hold; exits 2 when the drop fails."""
    from ._child import die_with_parent
    from ._privileges import PrivilegeError, drop_privileges, resolve_user

    sandbox = Sandbox.take()
    if sandbox is not None or resolve_user(int(user) if user.isdigit() else user)[0] != os.geteuid():
        try:
            drop_privileges(int(user) if user.isdigit() else user, sandbox)
        except PrivilegeError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
        die_with_parent(parent)  # changing user cleared the parent-death signal
    import importlib

    import anyio._backends._trio  # noqa: F401
    import setproctitle

    from . import _child  # noqa: F401

    if title is not None:  # a seed shows the command line an exec'd template would
        setproctitle.setproctitle(" ".join(title))
    for module in filter(None, preload):
        try:
            importlib.import_module(module)
        except Exception as exc:  # the child will fail the same way, and say so in its start
            print(f"template: cannot import {module}: {exc!r}", file=sys.stderr, flush=True)
    if title is None:  # a seed's parent template warmed up already
        _warm_up()
    gc.collect()
    gc.freeze()  # what the children share stays shared: no collection writes to its pages


class _Ping(Request[int], frozen=True):
    """The warm-up's message."""

    n: int


def _warm_up() -> None:
    """Run, once, what every child runs first: an actor system answering asks, and a decoder
    for every message type the imported modules define. The children then share what that
    leaves (specialized bytecode, type caches, decoders) instead of each writing its own copy
    of those pages; it is library state only, made from no input of any child's."""
    import msgspec

    from . import _wire
    from ._system import open_system

    buffer = bytearray()
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            if (
                isinstance(value, type)
                and issubclass(value, msgspec.Struct)
                and value.__module__ == module.__name__
            ):
                with contextlib.suppress(Exception):  # a type no message can carry
                    _wire._decoder_for(f"{value.__module__}:{value.__qualname__}", imports=False)
                    _wire.append_frame(buffer, _wire.Kind.TELL, 0, value())  # those with defaults
    for payload in _wire.FrameSplitter().feed(bytes(buffer)):
        with contextlib.suppress(Exception):
            frame = _wire.decode_frame(payload)
            _wire.decode_value(frame.type, frame.body, imports=False)

    class _Echo(Actor):
        async def receive(self, message: Any) -> Any:
            return message.n if isinstance(message, _Ping) else None

    async def round_trips() -> None:
        async with open_system() as system:
            ref = await system.spawn(_Echo, name="warm-up")
            for n in range(64):
                await ref.ask(_Ping(n))
                await ref.tell(_Ping(n))
            await ref.stop()

    detector = os.environ.get("REDDOG_STALL_DETECTOR")
    os.environ["REDDOG_STALL_DETECTOR"] = "off"  # a slow warm-up is no actor's stall
    try:
        with contextlib.suppress(Exception):
            anyio.run(round_trips, backend="trio")
    finally:
        if detector is None:
            del os.environ["REDDOG_STALL_DETECTOR"]
        else:
            os.environ["REDDOG_STALL_DETECTOR"] = detector


def _serve_forks(sock: socket.socket, seeds: bool = False) -> int:
    # Each request is read into this buffer and wiped once the child is forked: only the child
    # parses it, so the template never keeps a child's environment or command line.
    # Private (a child gets a copy, as of any memory), and untouched pages cost nothing.
    buffer = mmap.mmap(-1, _PACKET, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    cmsg_room = socket.CMSG_SPACE(_MAX_FDS * 4)
    sock.send(b"ready %d" % _title_room())
    while True:
        try:
            size, ancillary, flags, _ = sock.recvmsg_into([buffer], cmsg_room)
        except OSError:
            return 0
        fds = _received_fds(ancillary)
        if not size:
            return 0  # the parent is gone or closed us
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or threading.active_count() > 1:
            _wipe(buffer, size)
            for fd in fds:
                os.close(fd)
            sock.send(b"0")
            continue
        _spawn.gc_was_enabled = gc.isenabled()
        gc.disable()
        pid = _clone_sibling()
        if pid == 0:
            plant = _serve_seed if seeds else None
            child = functools.partial(_become_child, sock, bytes(buffer[:size]), fds, plant=plant)
            os._exit(_spawn._exit_code_of(child))
        _wipe(buffer, size)
        if _spawn.gc_was_enabled:
            gc.enable()
        for fd in fds:
            os.close(fd)
        sock.send(str(pid).encode())


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(array.array("i", data[:usable]))
    return fds


def _wipe(buffer: mmap.mmap, size: int) -> None:
    buffer[:size] = bytes(size)


def _become_child(
    sock: socket.socket,
    message: bytes,
    fds: list[int],
    plant: Callable[[socket.socket, int], int] | None = None,
) -> int:
    sock.close()
    request = json.loads(message)
    keep: list[int] = request["keep"]
    if len(fds) != len(keep) + bool(request["log"]):
        print(f"template: {len(fds)} descriptors came for {keep} and a log", file=sys.stderr)
        return 2
    log_fd = None
    if request["log"]:
        log_fd = fcntl.fcntl(fds[0], fcntl.F_DUPFD, max([*keep, *fds, 2]) + 1)
        os.close(fds[0])
        fds = fds[1:]
    _place_fds(fds, keep)
    new_session = request["new_session"]
    if plant is not None:
        if new_session:
            os.setsid()  # first, so that the seed is in the child's session and process group
            new_session = False
        keep = [*keep, _plant(plant)]
    start = ForkedStart(
        argv=request["argv"],
        env=request["env"],
        cwd=request["cwd"],
        new_session=new_session,
        log_fd=log_fd,
        keep_fds=keep,
    )
    return become(start)


def main() -> None:
    """The template process: ``python -m actors._template FD PARENT_PID NAME USER MODULE,... [seeds]``."""
    fd, parent_pid, _name, user, preload = sys.argv[1:6]
    seeds = sys.argv[6:7] == ["seeds"]
    from ._child import die_with_parent

    die_with_parent(int(parent_pid))
    sock = socket.socket(fileno=int(fd))
    sock.setblocking(True)
    # What every child runs: the actor runtime on trio, then whatever the parent named.
    _become_template(sock, int(parent_pid), user, preload.split(","), None)
    sys.exit(_serve_forks(sock, seeds))
