"""A web role's listening sockets and, for full IIS, its W3WP web workers (seed K, step 10).

The bootstrapper opens one listening socket per endpoint the role's sites bind and keeps it for
the VM's life, so no connection is refused across a worker or role host restart. For a full
IIS role a SiteActivator starts a W3WP process actor (``roles.hosts.w3wp:WebWorker``) on the
first connection, handing it the sockets, and starts a fresh one when it exits or dies.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping

import anyio

from actors import ActorError, ProcessExited, Ref
from fabric.guest.web_activation import SiteActivator, WorkerHandle, WorkerRapidFailError, listen_tcp
from fabric.model.errors import XPathError
from roles.protocol import EndpointInfo, RoleHostState

Log = Callable[[str], None]


class EndpointBindError(OSError):
    """A listening socket for one of the role's endpoints could not be opened."""


def open_sockets(endpoints: Iterable[EndpointInfo]) -> dict[str, socket.socket]:
    """Listen on each endpoint's host and port.

    Raises:
        EndpointBindError: an address is in use or not available; names the endpoint.
    """
    sockets: dict[str, socket.socket] = {}
    try:
        for endpoint in endpoints:
            try:
                sockets[endpoint.name] = listen_tcp(endpoint.host, endpoint.port)
            except OSError as exc:
                error = EndpointBindError(
                    f"cannot listen on {endpoint.host}:{endpoint.port} for endpoint "
                    f"{endpoint.name!r}: {exc.strerror or exc}; free the port or choose another"
                )
                error.errno = exc.errno
                raise error from None
    except BaseException:
        close_sockets(sockets)
        raise
    return sockets


#: How long a port in use may take to be released before the role fails to start: after a
#: reboot, the previous incarnation's processes may still be exiting with their sockets.
PORT_RELEASE_WAIT = 3.0


async def open_sockets_when_free(
    endpoints: Iterable[EndpointInfo], log: Log, patience: float = PORT_RELEASE_WAIT
) -> dict[str, socket.socket]:
    """open_sockets, waiting up to ``patience`` seconds for ports that are in use to be freed.

    Raises:
        EndpointBindError: a port is still in use after that, or cannot be used at all.
    """
    wanted = list(endpoints)
    deadline = anyio.current_time() + patience
    waiting = False
    while True:
        try:
            return open_sockets(wanted)
        except EndpointBindError as exc:
            if exc.errno != errno.EADDRINUSE or anyio.current_time() >= deadline:
                raise
            if not waiting:
                waiting = True
                log(f"{exc}: waiting up to {patience:.0f} s for it to be released")
        await anyio.sleep(0.02)


def close_sockets(sockets: Mapping[str, socket.socket]) -> None:
    """Close every socket (idempotent)."""
    for sock in sockets.values():
        sock.close()


class ActorWorker:
    """A W3WP process actor seen as the SiteActivator's WorkerHandle."""

    def __init__(self, ref: Ref, on_exit: Callable[[ActorWorker, int], None]) -> None:
        self.ref = ref
        self.pid = ref.pid or 0
        self._on_exit = on_exit

    async def wait(self) -> int:
        """Wait until the worker is gone; its exit code (negative: killed by that signal)."""
        reason = await self.ref.join()
        code = 0
        if isinstance(reason, ProcessExited) and reason.returncode is not None:
            code = reason.returncode
        elif reason is not None:
            code = 1
        self._on_exit(self, code)
        return code

    def terminate(self) -> None:
        """Stop it by the runtime's ladder: stop message, SIGTERM, SIGKILL."""
        self.ref.request_stop()

    def kill(self) -> None:
        """SIGKILL its whole process group at once."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)


class FailedWorker:
    """A worker that could not start, as a WorkerHandle that has exited with code 1."""

    async def wait(self) -> int:
        """It is already gone."""
        return 1

    def terminate(self) -> None:
        """Nothing runs."""

    def kill(self) -> None:
        """Nothing runs."""


class WebWorkers:
    """Runs the activator of a full IIS role and keeps track of the running W3WP."""

    def __init__(
        self,
        sockets: Mapping[str, socket.socket],
        spawn: Callable[[dict[str, int]], Awaitable[Ref]],
        *,
        log: Log,
        release: Callable[[Ref], None],
        stop_timeout: float,
        retry_after: float,
    ) -> None:
        self.sockets = dict(sockets)
        self.spawn = spawn
        self.log = log
        self.release = release
        self.stop_timeout = stop_timeout
        self.retry_after = retry_after
        self.current: ActorWorker | None = None
        self.starts = 0
        #: called when a worker reports "recycling" (a site called request_recycle())
        self.on_recycle: Callable[[str], None] = lambda detail: None

    async def _start(self, fds: Mapping[str, int]) -> WorkerHandle:
        try:
            ref = await self.spawn(dict(fds))
        except (ActorError, ProcessExited, XPathError, OSError) as exc:
            # Counts as a failed worker: the activator's rapid-fail protection applies.
            self.log(f"W3WP could not start: {exc}")
            return FailedWorker()
        worker = self.current = ActorWorker(ref, self._exited)
        self.starts += 1
        self.log(f"started W3WP (pid {worker.pid}) on the first request since it last ran")
        return worker

    def _exited(self, worker: ActorWorker, code: int) -> None:
        self.release(worker.ref)
        self.log(f"W3WP (pid {worker.pid}) exited with code {code}; the next request starts another")
        if self.current is worker:
            self.current = None

    def on_state(self, state: object) -> None:
        """What a W3WP reports; "recycling" recycles the instance, as Azure does."""
        worker = self.current
        if not isinstance(state, RoleHostState) or worker is None or (state.pid and state.pid != worker.pid):
            return
        self.log(f"W3WP (pid {state.pid}) {state.phase}" + (f": {state.detail}" if state.detail else ""))
        if state.phase == "recycling":
            self.on_recycle(state.detail or "a site called request_recycle()")

    def recycle(self) -> None:
        """Stop the running worker, if any; the next request starts a fresh one."""
        if self.current is not None:
            self.current.terminate()

    async def run(self) -> None:
        """Activate workers until cancelled; after rapid failures, wait, then serve again."""
        while True:
            activator = SiteActivator(self.sockets, self._start, stop_timeout=self.stop_timeout)
            try:
                await activator.run()
            except WorkerRapidFailError as exc:
                self.log(f"W3WP: {exc}; trying again in {self.retry_after:g} s")
                await anyio.sleep(self.retry_after)

    def worker_ref(self) -> Ref | None:
        """The running worker's Ref, for RoleEnvironment events."""
        return self.current.ref if self.current is not None else None
