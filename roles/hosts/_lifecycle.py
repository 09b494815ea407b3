"""The lifecycle of a role run from an entry point: on_start, Ready with run, stopping, on_stop.

Shared by WaWorkerHost, WaIISHost and WaWebHost. The role is either a RoleEntryPoint subclass
found in the role's code, or a ProgramEntryPoint command line.
"""

from __future__ import annotations

import inspect
import reprlib
from typing import ClassVar

import anyio

from roles.entry_point import RoleEntryPoint
from roles.environment import RoleEnvironment
from roles.events import RoleEnvironmentStoppingEventArgs
from roles.protocol import RoleHostConfig

from ._common import STOP_MARGIN, RoleFailed, RoleHostBase, describe, wait_first
from ._loader import EntryPointError, call_user, find_entry_point
from ._program import Program


class EntryPointHost(RoleHostBase):
    """A role host that runs the role's entry point; subclasses may add sites around it."""

    #: a worker role must define an entry point; a web role may rely on the default one
    entry_point_required: ClassVar[bool] = True

    def __init__(self, config: RoleHostConfig) -> None:
        """Build the host for ``config``; nothing runs until on_start."""
        super().__init__(config)
        self._lifecycle_scope: anyio.CancelScope | None = None
        self.entry: RoleEntryPoint | None = None
        self.program: Program | None = None
        #: on_start returned True: stopping and on_stop are due when the role ends
        self.role_started = False
        self._shutdown_done: anyio.Event | None = None
        self._run_error: BaseException | None = None
        #: stopping and on_stop did not finish within on_stop_timeout and were cut
        self.on_stop_overran = False

    # -- hooks for hosts that serve sites ---------------------------------------------------------

    async def before_ready(self) -> None:
        """Called after on_start returned True, before "ready"; raising fails the role."""

    async def after_ready(self) -> None:
        """Called once "ready" is reported and run has started."""

    async def after_role_stopped(self) -> None:
        """Called once on_stop has finished (or overrun), before the process ends."""

    # -- the lifecycle --------------------------------------------------------------------------

    async def lifecycle(self) -> None:
        """Run the entry point (or program) until it fails, recycles, or the host is stopped."""
        with anyio.CancelScope() as self._lifecycle_scope:
            if self.config.program:
                await self._run_program()
            else:
                await self._run_entry_point()

    def find_entry_class(self) -> type[RoleEntryPoint] | None:
        """The role's RoleEntryPoint subclass, or None when its code defines none.

        Raises:
            EntryPointError: the entry point cannot be loaded (the message says what to change).
        """
        return find_entry_point(self.config.app_root, self.config.entry_module)

    async def _load(self) -> RoleEntryPoint | None:
        config = self.config
        try:
            found = self.find_entry_class()
        except EntryPointError as error:
            await self.fail(str(error))
            return None
        if found is None:
            if self.entry_point_required:
                await self.fail(
                    f"no RoleEntryPoint subclass in any .py file of {config.app_root}; define one "
                    "there or name the entry module in the service definition"
                )
                return None
            self.log.info("no RoleEntryPoint subclass in %s: using the default one", config.app_root)
            found = RoleEntryPoint
        self.log.info("entry point %s.%s", found.__module__, found.__qualname__)
        try:
            return found()
        except Exception as error:
            await self.fail(f"creating {found.__qualname__} raised {describe(error)}")
            return None

    async def _injected_fault(self) -> None:
        """Chaos: fail or slow this on_start, as the bootstrapper was told to (once)."""
        fault = self.config.chaos_on_start
        if fault == "fail":
            self.log.warning("chaos: on_start fails on purpose")
            raise InjectedFault("on_start failed on purpose (chaos)")
        if fault.startswith("slow:"):
            seconds = float(fault.partition(":")[2])
            self.log.warning("chaos: on_start is held %.1f s on purpose", seconds)
            await anyio.sleep(seconds)

    async def _run_entry_point(self) -> None:
        entry = self.entry = await self._load()
        if entry is None:
            return
        self.log.info("calling on_start")
        try:
            await self._injected_fault()
            ok = await call_user(entry.on_start)
        except Exception as error:
            self.log.exception("on_start raised")
            await self.fail(f"on_start raised {describe(error)}")
            return
        refusal = on_start_refusal(ok)
        if refusal is not None:
            await self.fail(refusal)
            return
        if self.stopping:
            return
        # From here a stop raises stopping and calls on_stop, even while the sites start.
        self.role_started = True
        try:
            await self.before_ready()
        except Exception as error:
            self.log.exception("the role's sites could not start")
            await self.fail(describe(error))
            return
        if self.stopping:
            return
        run_done = anyio.Event()
        # In the actor's own task group, not ours: run keeps going while stopping and on_stop
        # run, as Azure's Run thread does; it ends with the process.
        self.start_soon(self._run, entry, run_done, name="run")
        await self.report("ready")
        await self.after_ready()
        await wait_first(run_done, self.recycle_requested)
        if self.stopping or self.failed:
            return
        if not self.recycle_requested.is_set() and self._run_error is not None:
            await self.fail(f"run raised {describe(self._run_error)}")
            return
        done = self._claim_shutdown()
        if done is None:  # the bootstrapper's stop got there first
            return
        why = "request_recycle() was called" if self.recycle_requested.is_set() else "run returned"
        await self.report("recycling", why)
        await self.shutdown_role(done)
        self.stop()

    async def _run(self, entry: RoleEntryPoint, done: anyio.Event) -> None:
        self.log.info("calling run")
        try:
            await call_user(entry.run)
        except Exception as error:
            self.log.exception("run raised")
            self._run_error = error
        else:
            self.log.info("run returned")
        done.set()

    async def _run_program(self) -> None:
        program = self.program = Program(self.config.program, self.config.app_root)
        exited = anyio.Event()

        async def run() -> None:
            try:
                code = await program.run()
            except OSError as error:
                self.log.error("cannot start the program: %s", error)
            else:
                self.log.info("the program exited with code %d", code)
            exited.set()

        self.log.info("running the program: %s", self.config.program)
        self.role_started = True
        self.start_soon(run, name="program")
        # Ready as soon as it is started, whatever set_ready_on_process_start says: a program
        # has no way to report readiness later.
        await self.report("ready")
        await wait_first(exited, self.recycle_requested)
        if self.stopping or self.failed:
            return
        code = program.returncode
        if code not in (0, None):
            await self.fail(f"the program exited with code {code}")
            return
        done = self._claim_shutdown()
        if done is None:
            return
        if code == 0:
            await self.report("recycling", "the program exited with code 0")
        else:
            await self.report("recycling", "request_recycle() was called")
            await program.terminate(self.config.on_stop_timeout)
        done.set()
        self.stop()

    # -- stopping -------------------------------------------------------------------------------

    async def on_stop(self) -> None:
        """Stopped by the bootstrapper: report "stopping", raise stopping, call on_stop."""
        if self.failed:
            return
        done = self._claim_shutdown()
        if done is None:  # recycling: the shutdown is under way already
            assert self._shutdown_done is not None
            await self._shutdown_done.wait()
            return
        self.stopping = True
        await self.report("stopping")
        if self.program is not None:
            await self.program.terminate(self.config.on_stop_timeout)
        elif self.role_started:
            await self.shutdown_role(done)
        elif self._lifecycle_scope is not None:
            # Still loading or in on_start: abandon it, as Azure ends the process.
            self._lifecycle_scope.cancel()
        done.set()

    def _claim_shutdown(self) -> anyio.Event | None:
        """A fresh "shutdown done" event for the one caller that shuts the role down, else None."""
        if self._shutdown_done is not None:
            return None
        self._shutdown_done = anyio.Event()
        return self._shutdown_done

    async def shutdown_role(self, done: anyio.Event) -> None:
        """Raise stopping, then call on_stop, both within on_stop_timeout; then set ``done``.

        Raises:
            RoleFailed: a stopping handler or on_stop raised (reported as "failed" first).
        """
        timeout = self.config.on_stop_timeout
        step = "a stopping handler"
        try:
            with anyio.move_on_after(timeout) as scope:
                await RoleEnvironment.stopping.emit(RoleEnvironmentStoppingEventArgs())
                if self.entry is not None:
                    step = "on_stop"
                    self.log.info("calling on_stop")
                    await call_user(self.entry.on_stop)
            self.on_stop_overran = scope.cancelled_caught
            if scope.cancelled_caught:
                self.log.warning("on_stop did not finish within %g s: ending the process anyway", timeout)
            else:
                self.log.info("on_stop finished")
        except Exception as error:
            self.log.exception("%s raised", step)
            self.failed = True
            detail = f"{step} raised {describe(error)}"
            await self.report("failed", detail)
            raise RoleFailed(detail) from error
        finally:
            # The sites' requests in flight get graceful_timeout, the host's own clean-up the margin.
            cleanup_timeout = self.config.graceful_timeout + STOP_MARGIN
            with anyio.move_on_after(cleanup_timeout, shield=True) as cleanup:
                await self.after_role_stopped()
            if cleanup.cancel_called:
                self.log.warning("clean-up after on_stop did not end within %g s: cut", cleanup_timeout)
            done.set()


def on_start_refusal(answer: object) -> str | None:
    """Why on_start's answer fails the role's start, or None when the role may start.

    True starts the role, and so does None (a method without a return); False fails the
    start; anything else is a mistake in the role, named so that its author can fix it.
    """
    if answer is None or answer is True:
        return None
    if answer is False:
        return "on_start returned False"
    if inspect.iscoroutine(answer):
        answer.close()  # never to be awaited: spare the "never awaited" warning
        return "on_start returned a coroutine, not a bool: await it inside on_start and return True or False"
    return (
        f"on_start returned {reprlib.repr(answer)} (a {type(answer).__name__}), not a bool: "
        "return True to start the role or False to fail its start"
    )


class InjectedFault(RuntimeError):
    """A failure chaos asked for."""
