"""Supervisors, after Erlang/OTP: restart failed children by strategy, within an intensity."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import msgspec
from anyio.abc import TaskStatus

from ._actor import Actor
from ._cell import LocalCell
from ._errors import RestartIntensityExceeded
from ._process import ProcessCell
from ._ref import Ref
from ._request import Request
from ._scope import Cell
from ._system import ProcessOptions

logger = logging.getLogger("actors.supervisor")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
Restart = Literal["permanent", "transient", "temporary"]


@dataclass(frozen=True, kw_only=True)
class ChildSpec:
    """How a supervisor starts and restarts one child.

    Give ``factory`` for an in-process actor, or ``target`` ("package.module:ClassName") with
    ``args``/``kwargs``/``options`` for an actor in its own process.

    Attributes:
        restart: "permanent" (always restarted), "transient" (restarted only after a failure)
            or "temporary" (never restarted).
    """

    name: str
    factory: Callable[[], Actor] | None = None
    target: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: ProcessOptions | None = None
    restart: Restart = "permanent"
    mailbox_size: int = 1000

    def __post_init__(self) -> None:
        if (self.factory is None) == (self.target is None):
            raise ValueError(f"child {self.name!r}: give exactly one of factory= or target=")
        if self.restart not in ("permanent", "transient", "temporary"):
            raise ValueError(f"child {self.name!r}: restart must be permanent, transient or temporary")


class ChildInfo(msgspec.Struct, frozen=True):
    """One child as its supervisor sees it."""

    name: str
    running: bool
    pid: int | None
    restarts: int


class WhichChildren(Request[list[ChildInfo]], frozen=True):
    """Ask a supervisor for a ChildInfo per child, in start order."""


class GetChild(Request[Ref], frozen=True):
    """Ask a supervisor for the Ref of the named child (stable across its restarts)."""

    name: str


@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    cell: Cell
    running: bool = False
    expect_exit: bool = False
    finished: bool = False
    started_at: float = 0.0
    consecutive: int = 0
    restarts: int = 0


class Supervisor(Actor):
    """Starts its children in order and keeps them running.

    Args:
        children: the child specs, in start order.
        strategy: which children restart when one fails: only it ("one_for_one"), all
            ("one_for_all"), or it and those started after it ("rest_for_one").
        max_restarts, within: the restart intensity: more than ``max_restarts`` restarts within
            ``within`` seconds and the supervisor stops every child and fails itself
            (RestartIntensityExceeded), for its own supervisor to handle.
        backoff_initial, backoff_factor, backoff_max: the delay before the n-th consecutive
            restart of a child is ``min(backoff_initial * backoff_factor**(n-1), backoff_max)``.
        reset_after: a child that ran this long counts as healthy: its backoff starts over.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        within: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_factor: float = 2.0,
        backoff_max: float = 10.0,
        reset_after: float = 30.0,
    ) -> None:
        if strategy not in ("one_for_one", "one_for_all", "rest_for_one"):
            raise ValueError(f"strategy must be one_for_one, one_for_all or rest_for_one, not {strategy!r}")
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self._specs = list(children)
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self.backoff_initial = backoff_initial
        self.backoff_factor = backoff_factor
        self.backoff_max = backoff_max
        self.reset_after = reset_after
        self._children: list[_Child] = []
        self._restarts: deque[float] = deque()
        self._stopping = False

    async def on_start(self) -> None:
        """Start every child in order; a child that cannot start fails the supervisor's start."""
        send, receive = anyio.create_memory_object_stream[tuple[_Child, BaseException | None]](math.inf)
        self._exit_send, self._exit_receive = send, receive
        for spec in self._specs:
            child = _Child(spec, self._make_cell(spec))
            self._children.append(child)
            await self._start(child)
        self.start_soon(self._watch)

    async def receive(self, message: Any) -> Any:
        """Answer WhichChildren and GetChild."""
        match message:
            case WhichChildren():
                return [
                    ChildInfo(
                        name=c.spec.name,
                        running=c.running,
                        pid=c.cell.ref.pid if c.running else None,
                        restarts=c.restarts,
                    )
                    for c in self._children
                ]
            case GetChild(name=name):
                for child in self._children:
                    if child.spec.name == name:
                        return child.cell.ref
                raise KeyError(f"no child named {name!r}")
        return await super().receive(message)

    async def on_stop(self) -> None:
        """Stop the children, newest first."""
        self._stopping = True
        await self._stop_children(self._children)
        for child in self._children:
            child.cell.close(None)

    def _make_cell(self, spec: ChildSpec) -> Cell:
        if spec.factory is not None:
            return LocalCell(
                self.system,
                spec.name,
                spec.factory,
                mailbox_size=spec.mailbox_size,
                parent=self.ref,
            )
        assert spec.target is not None
        return ProcessCell(
            self.system,
            spec.name,
            spec.target,
            spec.options or ProcessOptions(),
            args=spec.args,
            kwargs=dict(spec.kwargs),
            parent=self.ref,
            mailbox_size=spec.mailbox_size,
        )

    async def _start(self, child: _Child) -> None:
        child.expect_exit = False
        child.cell.stop_requested = False
        await self._task_group.start(self._run_child, child)
        child.running = True
        child.started_at = anyio.current_time()

    async def _run_child(self, child: _Child, *, task_status: TaskStatus[Ref]) -> None:
        try:
            reason = await child.cell.run(task_status=task_status)
        except BaseException:
            child.running = False
            child.cell.close(None)
            raise
        child.running = False
        self._exit_send.send_nowait((child, reason))

    async def _stop_children(self, children: Sequence[_Child]) -> None:
        for child in reversed(children):
            if child.running:
                child.expect_exit = True
                await child.cell.stop()

    async def _watch(self) -> None:
        async for child, reason in self._exit_receive:
            if self._stopping or child.expect_exit or child.finished:
                continue
            if child.cell.stopped_by_owner:
                # Stopped on purpose through its Ref: that is not a failure to repair.
                child.finished = True
                child.cell.close(reason)
                continue
            restart = child.spec.restart
            if restart == "temporary" or (restart == "transient" and reason is None):
                logger.info(
                    "child %r ended (%s); not restarting a %s child",
                    child.spec.name,
                    reason,
                    restart,
                )
                child.finished = True
                child.cell.close(reason)
                continue
            await self._restart(child, reason)

    async def _restart(self, failed: _Child, reason: BaseException | None) -> None:
        now = anyio.current_time()
        self._restarts.append(now)
        while self._restarts and self._restarts[0] < now - self.within:
            self._restarts.popleft()
        if len(self._restarts) > self.max_restarts:
            logger.error(
                "supervisor %r: more than %d restarts within %.1f s; stopping its children and failing",
                self.name,
                self.max_restarts,
                self.within,
            )
            self._stopping = True
            await self._stop_children(self._children)
            raise RestartIntensityExceeded(
                f"supervisor {self.name!r}: child {failed.spec.name!r} failed ({reason!r}) and the "
                f"restart intensity ({self.max_restarts} in {self.within} s) is exceeded"
            )
        if now - failed.started_at >= self.reset_after:
            failed.consecutive = 0
        failed.consecutive += 1
        delay = min(self.backoff_initial * self.backoff_factor ** (failed.consecutive - 1), self.backoff_max)
        group = self._restart_group(failed)
        logger.warning(
            "supervisor %r: child %r failed (%r); restarting %s in %.3f s",
            self.name,
            failed.spec.name,
            reason,
            [c.spec.name for c in group],
            delay,
        )
        await self._stop_children([c for c in group if c is not failed])
        await anyio.sleep(delay)
        for child in group:
            child.restarts += 1
            try:
                await self._start(child)
            except Exception as exc:
                # A failed restart is a failure like any other: it counts towards the intensity.
                self._exit_send.send_nowait((child, exc))
                break

    def _restart_group(self, failed: _Child) -> list[_Child]:
        live = [c for c in self._children if not c.finished]
        if self.strategy == "one_for_one":
            return [failed]
        if self.strategy == "one_for_all":
            return live
        return live[live.index(failed) :]
