"""Hold a web role's listening sockets and start W3WP on the first connection (seed step 10).

The activator owns one listening socket per endpoint. It waits until one of them has a pending
connection, without accepting it, then calls `start_worker(fds)`; the worker inherits the
sockets and accepts the pending connection itself. While the worker runs, the activator only
waits for it to exit. The worker exits by itself after its idle timeout (W3WP's
`--idle-timeout`), or dies; either way the activator goes back to waiting, and the next
connection starts a fresh worker. Connections that arrive while no worker accepts wait in the
sockets' backlog, so none is lost across a restart. A worker that fails `rapid_fail_limit`
times within `rapid_fail_interval` seconds stops the activator with WorkerRapidFailError,
as IIS's rapid-fail protection stops an application pool.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import anyio
import anyio.abc

from actors import KILL_REAP_TIMEOUT

logger = logging.getLogger(__name__)


class WorkerHandle(Protocol):
    """A running worker process, as anyio.abc.Process provides it."""

    async def wait(self) -> int:
        """Wait for the worker to exit and return its exit code (negative: killed by signal)."""
        ...

    def terminate(self) -> None:
        """Ask the worker to stop (SIGTERM): it finishes in-flight requests, then exits."""

    def kill(self) -> None:
        """Stop the worker at once (SIGKILL)."""


StartWorker = Callable[[Mapping[str, int]], Awaitable[WorkerHandle]]


class WorkerRapidFailError(Exception):
    """The web worker kept failing, so the activator stopped starting it."""


def listen_tcp(host: str, port: int, *, backlog: int = 128) -> socket.socket:
    """Return a TCP socket listening on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class SiteActivator:
    """Starts a web worker on demand for a set of listening sockets, and restarts it on demand.

    `sockets` maps endpoint names to listening sockets; the caller keeps ownership and closes
    them. `start_worker` receives {endpoint name: fd} and must start a process that inherits
    those fds (anyio.open_process(..., pass_fds=fds.values())) and return its handle. When the
    activator is cancelled it stops a running worker: terminate, wait `stop_timeout` seconds,
    then kill, always waiting for the exit.
    """

    def __init__(
        self,
        sockets: Mapping[str, socket.socket],
        start_worker: StartWorker,
        *,
        stop_timeout: float = 10.0,
        rapid_fail_limit: int = 5,
        rapid_fail_interval: float = 300.0,
    ) -> None:
        """Hold `sockets` and start workers with `start_worker` (see the class docstring)."""
        if not sockets:
            raise ValueError("SiteActivator needs at least one listening socket")
        self.sockets = dict(sockets)
        self.start_worker = start_worker
        self.stop_timeout = stop_timeout
        self.rapid_fail_limit = rapid_fail_limit
        self.rapid_fail_interval = rapid_fail_interval
        self.worker: WorkerHandle | None = None
        self.starts = 0
        self.exit_codes: list[int] = []
        self._failures: list[float] = []
        self._changed = anyio.Event()

    @property
    def fds(self) -> dict[str, int]:
        """The fd of each endpoint's socket, as the worker inherits them."""
        return {name: sock.fileno() for name, sock in self.sockets.items()}

    async def wait_changed(self) -> None:
        """Wait until a worker starts or exits."""
        await self._changed.wait()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Activate workers until cancelled; raises WorkerRapidFailError on repeated failures."""
        task_status.started()
        while True:
            await self._wait_for_connection()
            handle = await self.start_worker(self.fds)
            self.starts += 1
            self.worker = handle
            self._notify()
            try:
                code = await handle.wait()
            except BaseException:
                await self._stop(handle)
                self.worker = None
                raise
            self.worker = None
            self.exit_codes.append(code)
            self._notify()
            self._check_failure(code)

    async def _wait_for_connection(self) -> None:
        async with anyio.create_task_group() as tasks:

            async def wait_one(sock: socket.socket) -> None:
                await anyio.wait_readable(sock)
                tasks.cancel_scope.cancel()

            for sock in self.sockets.values():
                tasks.start_soon(wait_one, sock)

    async def _stop(self, handle: WorkerHandle) -> None:
        # Shielded, so that a cancelled activator still stops its worker; bounded by SIGTERM's
        # grace and SIGKILL's reap.
        with anyio.move_on_after(self.stop_timeout + KILL_REAP_TIMEOUT, shield=True) as stopping:
            with contextlib.suppress(ProcessLookupError):
                handle.terminate()
            with anyio.move_on_after(self.stop_timeout):
                await handle.wait()
                return
            logger.warning("web worker ignored SIGTERM for %g s: killing it", self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                handle.kill()
            await handle.wait()
        if stopping.cancel_called:
            logger.error("web worker was not reaped within %g s after SIGKILL", KILL_REAP_TIMEOUT)

    def _check_failure(self, code: int) -> None:
        if code == 0:
            return
        logger.warning("web worker exited with code %d", code)
        now = anyio.current_time()
        self._failures = [t for t in self._failures if now - t < self.rapid_fail_interval]
        self._failures.append(now)
        if len(self._failures) >= self.rapid_fail_limit:
            raise WorkerRapidFailError(
                f"the web worker failed {len(self._failures)} times within "
                f"{self.rapid_fail_interval:g} s (last exit code {code}); fix the site "
                "(the worker's stderr says why) and restart the role"
            )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
