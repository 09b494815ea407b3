"""A Scope owns actors: it starts them in a task group and stops them in reverse start order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from anyio.abc import TaskGroup, TaskStatus

from ._cell import DEFAULT_STOP_TIMEOUT, LocalCell
from ._ref import Ref

if TYPE_CHECKING:
    from ._actor import Actor
    from ._system import ActorSystem, ProcessOptions

logger = logging.getLogger("actors")


class Cell(Protocol):
    """What a Scope or a Supervisor runs: a local or a process actor's life across incarnations."""

    name: str
    ref: Ref
    stop_requested: bool
    stopped_by_owner: bool

    async def run(self, *, task_status: TaskStatus[Ref] = ...) -> BaseException | None:
        """Run one incarnation; return None for a normal end or the crash."""

    @property
    def stop_budget(self) -> float:
        """The most stop() may take, in seconds."""

    async def stop(self) -> None:
        """Stop the running incarnation and wait for it to end."""

    def close(self, reason: BaseException | None) -> None:
        """Mark the actor gone for good."""


class Scope:
    """Actors owned together: unsupervised, each runs once; closing stops them newest first."""

    def __init__(self, system: ActorSystem, task_group: TaskGroup) -> None:
        self.system = system
        self._task_group = task_group
        self._cells: list[Cell] = []
        self._closing = False

    async def spawn(
        self,
        factory: Callable[[], Actor],
        *,
        name: str,
        mailbox_size: int = 1000,
        parent: Ref | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> Ref:
        """Start an in-process actor; return its Ref once on_start has finished.

        ``stop_timeout`` bounds its stop: the message in hand plus on_stop.
        """
        cell = LocalCell(
            self.system, name, factory, mailbox_size=mailbox_size, parent=parent, stop_timeout=stop_timeout
        )
        return await self.start_cell(cell)

    async def spawn_process(
        self, target: str, *, name: str, options: ProcessOptions | None = None, **kwargs: Any
    ) -> Ref:
        """Start a process actor; return its Ref once the child's on_start has finished."""
        from ._process import ProcessCell
        from ._system import ProcessOptions

        opts = options or ProcessOptions()
        cell = ProcessCell(self.system, name, target, opts, **kwargs)
        return await self.start_cell(cell)

    async def start_cell(self, cell: Cell) -> Ref:
        """Run a cell once in this scope; return its Ref when it has started."""
        if self._closing:
            raise RuntimeError(f"cannot start {cell.name!r}: its owner is stopping")
        ref: Ref = await self._task_group.start(self._run_once, cell)
        return ref

    async def _run_once(self, cell: Cell, *, task_status: TaskStatus[Ref]) -> None:
        reason: BaseException | None = None
        started = False

        def on_started(ref: Ref | None = None) -> None:
            nonlocal started
            started = True
            self._cells.append(cell)
            task_status.started(cell.ref)

        try:
            reason = await cell.run(task_status=_Forward(on_started))
        except BaseException as exc:
            reason = exc
            raise
        finally:
            if started:
                self._cells.remove(cell)
            cell.close(reason)

    @property
    def stop_budget(self) -> float:
        """The most aclose() may take: its actors stop one after another."""
        return sum(cell.stop_budget for cell in self._cells)

    async def aclose(self) -> None:
        """Stop every actor of the scope, newest first, each waiting for the one after it."""
        self._closing = True
        for cell in reversed(list(self._cells)):
            await cell.stop()


class _Forward(TaskStatus[Ref]):
    """Passes task_status.started through a callback, so the owner can record the start."""

    def __init__(self, callback: Callable[[Ref | None], None]) -> None:
        self._callback = callback

    def started(self, value: Ref | None = None) -> None:
        self._callback(value)
