"""Refs: the one handle to an actor, the same whether it lives in this process or another."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import anyio

from ._errors import AskTimeout, MailboxFull
from ._mailbox import AwaitedReply, Reply
from ._request import R, Request

if TYPE_CHECKING:
    from ._link import LinkFaults
    from ._timer import AskTimer

#: How long ask() waits by default: long enough for any sane handler, short enough that a
#: lost reply surfaces as an error rather than a hang.
DEFAULT_ASK_TIMEOUT: Final = 30.0


class Target(Protocol):
    """What a Ref talks to: a local actor cell, a process actor, or the peer across a link."""

    name: str
    #: fails asks that are not answered in time
    timer: AskTimer

    def deliver(self, message: Any, reply: Reply | None) -> Awaitable[None]:
        """Queue a message (await it: it waits for room); its answer, if any, goes to ``reply``."""

    def deliver_nowait(self, message: Any, reply: Reply | None) -> None:
        """Queue a message now or raise MailboxFull."""

    async def wait_reply(self, reply: AwaitedReply) -> None:
        """Wait until the answer to an ask delivered to this target has arrived."""

    def request_stop(self) -> None:
        """Ask the actor to stop; returns at once."""

    async def join(self) -> BaseException | None:
        """Wait until the actor is gone for good; return why (None for a normal stop)."""

    @property
    def pid(self) -> int | None:
        """The pid of the process running the actor now."""

    @property
    def faults(self) -> LinkFaults | None:
        """The fault hook of the link to the actor, for process actors."""


@final
class Ref:
    """A handle to an actor: tell it, ask it, stop it, wait for it.

    A Ref stays valid across restarts by a supervisor: messages sent while the actor restarts
    wait in its mailbox (or, for a process actor, in the link's outgoing buffer).
    """

    __slots__ = ("_target", "name")

    def __init__(self, target: Target) -> None:
        self._target = target
        self.name = target.name

    def tell(self, message: object) -> Awaitable[None]:
        """Send a message without waiting for an answer; waits while the mailbox is full
        (await it: ``await ref.tell(message)``).

        Raises:
            ActorDead: the actor is gone.
        """
        # The target's own coroutine, not one of ours around it: a tell's cost is mostly
        # per-call overhead, and a coroutine more is a tenth of it.
        return self._target.deliver(message, None)

    def tell_nowait(self, message: object) -> None:
        """Send a message at once.

        Raises:
            MailboxFull: the mailbox has no room now.
            ActorDead: the actor is gone.
        """
        self._target.deliver_nowait(message, None)

    def tell_many(self, messages: Iterable[object]) -> Awaitable[None]:
        """Send messages in order, as the same tells one after another would (await it: it
        waits while the mailbox is full), at a fraction of their cost: a run of messages of one
        type crosses a link as one frame, encoded in one call. Each reaches ``receive`` on its
        own; a later ask from the same task is handled after them all.

        Raises:
            ActorDead: the actor is gone (the messages before it went may have been handled).
        """
        deliver_many = getattr(self._target, "deliver_many", None)
        if deliver_many is None:  # a target of another kind: a tell each
            return self._tell_each(messages)
        result: Awaitable[None] = deliver_many(messages)
        return result

    async def _tell_each(self, messages: Iterable[object]) -> None:
        deliver = self._target.deliver
        for message in messages:
            await deliver(message, None)

    def tell_many_nowait(self, messages: Iterable[object]) -> None:
        """Send messages in order at once, as far as there is room now.

        Raises:
            MailboxFull: not all of them fit; its ``sent`` says how many (the first ones) went.
            ActorDead: the actor is gone.
        """
        deliver_many_nowait = getattr(self._target, "deliver_many_nowait", None)
        if deliver_many_nowait is not None:
            deliver_many_nowait(messages)
            return
        for sent, message in enumerate(messages):
            try:
                self._target.deliver_nowait(message, None)
            except MailboxFull as exc:
                exc.sent = sent
                raise

    async def ask(self, message: Request[R], *, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> R:
        """Send a request and return the handler's return value, the request's answer type.

        Raises:
            AskTimeout: no answer within ``timeout`` seconds (None waits for ever).
            ActorError: the handler raised; carries the exception's type name, message and
                traceback text, and a registered exception itself, from another process too
                (see register_error and ActorError.caused_by).
            ActorDead: the actor is gone, or went before answering.
        """
        target = self._target
        reply = AwaitedReply()
        try:
            target.deliver_nowait(message, reply)
        except MailboxFull:
            return await self._ask_when_there_is_room(message, reply, timeout)
        try:
            if timeout is not None:
                # Not a cancel scope: one costs as much as the rest of a local ask.
                target.timer.watch(reply, timeout, self.name, message)
            await target.wait_reply(reply)
        except BaseException:
            reply.abandon()
            raise
        answer: R = reply.result()  # trusted to be an R: a check would cost on every ask
        return answer

    async def _ask_when_there_is_room(
        self, message: Request[R], reply: AwaitedReply, timeout: float | None
    ) -> R:
        # The slow path: the wait for room counts against the timeout too.
        with anyio.move_on_after(timeout) as scope:
            try:
                await self._target.deliver(message, reply)
                await reply.wait()
            except BaseException:
                reply.abandon()
                raise
        if scope.cancelled_caught:
            reply.abandon()
            raise AskTimeout(
                f"actor {self.name!r} did not answer {type(message).__name__} within {timeout} s"
            )
        answer: R = reply.result()
        return answer

    def request_stop(self) -> None:
        """Ask the actor to stop and return at once (its owner will not restart it)."""
        self._target.request_stop()

    async def stop(self) -> BaseException | None:
        """Stop the actor and wait until it is gone; return why it ended (None: normally)."""
        self._target.request_stop()
        return await self._target.join()

    async def join(self) -> BaseException | None:
        """Wait until the actor is gone for good; return why it ended (None: normally)."""
        return await self._target.join()

    @property
    def pid(self) -> int | None:
        """The pid of the process running the actor now (this process's pid for a local one)."""
        return self._target.pid

    @property
    def faults(self) -> LinkFaults | None:
        """The fault hook of the link to a process actor (None for a local actor)."""
        return self._target.faults

    def __repr__(self) -> str:
        return f"<Ref {self.name!r}>"
