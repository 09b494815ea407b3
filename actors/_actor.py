"""The Actor base class: state plus a handler, fed one message at a time from a mailbox."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from anyio.abc import TaskGroup

if TYPE_CHECKING:
    from ._cell import LocalCell
    from ._mailbox import Reply
    from ._ref import Ref
    from ._system import ActorSystem, ProcessOptions


class Actor:
    """Subclass this and override ``receive``; optionally ``on_start`` and ``on_stop``.

    Messages are handled one at a time, in mailbox order. The value ``receive`` returns is the
    answer to an ask (a ``Request[R]`` is answered with an R). An exception raised while
    answering an ask goes back to the asker as an ActorError and the actor carries on; an exception raised while handling a tell crashes the
    actor (its supervisor decides what happens next), because nobody else can act on it.
    """

    _cell: LocalCell
    _task_group: TaskGroup

    async def on_start(self) -> None:
        """Called once before the first message; an exception here fails the spawn."""

    async def receive(self, message: Any) -> Any:
        """Handle one message; the return value answers an ask."""
        raise TypeError(f"{type(self).__name__} does not handle {type(message).__name__} messages")

    async def on_stop(self) -> None:
        """Called once when the actor is stopped (not when it crashes)."""

    # -- context, valid from on_start on ---------------------------------------------------

    @property
    def ref(self) -> Ref:
        """This actor's own Ref."""
        return self._cell.ref

    @property
    def name(self) -> str:
        """The name the actor was spawned with."""
        return self._cell.name

    @property
    def system(self) -> ActorSystem:
        """The actor system this actor lives in."""
        return self._cell.system

    @property
    def stop_requested(self) -> bool:
        """Whether this actor was asked to stop (its stop ladder has begun): work it starts now
        would be cut short, and children that end now end on purpose."""
        return self._cell.stop_requested

    @property
    def parent(self) -> Ref | None:
        """The actor this one reports to, when the spawner named one (across a process link too)."""
        return self._cell.parent

    def on_arrival(self, hook: Callable[[Any], None] | None) -> None:
        """Call ``hook(message)`` as each message enters this actor's mailbox, before it waits
        for room or for the messages ahead of it (None: no more): a heartbeat is stamped when
        it arrives, not when a backlog lets it be handled. The hook runs in the sender's task:
        quick, and it must not raise."""
        self._cell.on_arrival(hook)

    def mailbox_full(self) -> bool:
        """Whether this actor's mailbox is full: senders wait for room (a tell_nowait fails)."""
        return self._cell.mailbox_full()

    def start_soon(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None
    ) -> None:
        """Run a background task for the actor's lifetime; if it raises, the actor crashes."""
        self._task_group.start_soon(func, *args, name=name)

    async def start(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None
    ) -> Any:
        """Like start_soon, but wait until the task calls ``task_status.started(value)``."""
        return await self._task_group.start(func, *args, name=name)

    async def spawn(
        self, factory: Callable[[], Actor], *, name: str, mailbox_size: int = 1000, stop_timeout: float = 10.0
    ) -> Ref:
        """Spawn an in-process actor owned by this one: it stops before this actor does."""
        return await self._cell.children.spawn(
            factory, name=name, mailbox_size=mailbox_size, parent=self.ref, stop_timeout=stop_timeout
        )

    async def spawn_process(
        self, target: str, *, name: str, options: ProcessOptions | None = None, **kwargs: Any
    ) -> Ref:
        """Spawn a process actor owned by this one (see ActorSystem.spawn_process)."""
        kwargs.setdefault("parent", self.ref)
        return await self._cell.children.spawn_process(target, name=name, options=options, **kwargs)

    def defer_reply(self) -> Reply:
        """Take over the answer to the ask being handled, to give it later from another task.

        The handler's return value is then ignored; call ``resolve(value)`` or ``reject(error)``
        on the returned Reply exactly once (a later call is ignored). Long work can go on in a
        background task while the actor keeps handling its mailbox, as a gen_server that
        answers ``noreply`` and calls ``gen_server:reply`` later.

        Raises:
            RuntimeError: the message being handled is a tell, or the answer was taken already.
        """
        reply = self._cell.current_reply
        if reply is None:
            raise RuntimeError("defer_reply() is only for the ask being handled, and only once")
        self._cell.current_reply = None
        return reply

    def answer_later(self, work: Coroutine[Any, Any, Any]) -> None:
        """Answer the ask being handled with what ``work`` returns (or the exception it raises),
        awaited in a background task while the actor goes on with its mailbox."""
        reply = self.defer_reply()

        async def run() -> None:
            try:
                value = await work
            except Exception as exc:
                reply.reject(exc)
            else:
                reply.resolve(value)

        self.start_soon(run)

    def stop(self) -> None:
        """Stop this actor once the current message is handled (a normal exit)."""
        self._cell.request_stop(by_owner=False)
