"""The actor system: the root that owns every top-level actor and child process."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ._cell import DEFAULT_STOP_TIMEOUT
from ._scope import Scope
from ._stall import install as install_stall_detector
from ._timer import AskTimer

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._actor import Actor
    from ._listener import Listener
    from ._net import LinkOptions, Peer
    from ._ref import Ref
    from ._sandbox import Sandbox
    from ._tls import ClientTLS, ServerTLS
    from ._zygote import Template

logger = logging.getLogger("actors")

#: Beyond its actors' stop budgets, how long closing a system may take for its own steps.
CLOSE_MARGIN = 1.0


@dataclass(frozen=True, kw_only=True)
class ProcessOptions:
    """How a process actor's process is run, watched and stopped.

    Attributes:
        log_path: file that receives the child's stdout and stderr (appended); None inherits ours.
        env: extra environment variables for the child (on top of ours).
        inherit_env: False: the child's environment is ``env`` alone, none of ours (a child
            that runs another party's code: what we were started with may hold secrets).
        cwd: working directory of the child.
        new_session: run the child in a new session and process group (a VM: kill it whole).
        run_as: run the child as this unprivileged user (needs root): it switches right after
            the interpreter starts, before the actor's code is imported, keeping no capability
            (see _privileges).
        sandbox: with ``run_as``, the child's own view of the filesystem, entered before it
            switches (see _sandbox).
        pass_fds: more file descriptors the child inherits (e.g. listening sockets).
        python: the interpreter to run.
        template: with ``run_as``, a warm template process already running as that user in
            that sandbox: the child is forked from it instead of exec'd (see _zygote); exec'd
            still when the template has died.
        start_timeout: how long the child may take to import and finish on_start.
        ping_interval: seconds between liveness pings; None disables them.
        ping_timeout: a ping unanswered this long means the child is unresponsive.
        stop_timeout: after the stop message, how long before SIGTERM.
        term_timeout: after SIGTERM, how long before SIGKILL.
    """

    log_path: str | os.PathLike[str] | None = None
    env: Mapping[str, str] | None = None
    inherit_env: bool = True
    cwd: str | os.PathLike[str] | None = None
    new_session: bool = False
    run_as: str | int | None = None
    sandbox: Sandbox | None = None
    pass_fds: tuple[int, ...] = ()
    python: str | None = None
    template: Template | None = None
    start_timeout: float = 60.0
    ping_interval: float | None = 5.0
    ping_timeout: float = 15.0
    stop_timeout: float = 10.0
    term_timeout: float = 5.0


class ActorSystem:
    """Spawns actors, in this process or in child processes, and owns them until it closes."""

    def __init__(
        self,
        scope_factory: Callable[[ActorSystem], Scope],
        timer: AskTimer,
        task_group: TaskGroup | None = None,
    ) -> None:
        #: fails the asks made to this system's actors that are not answered in time
        self.timer = timer
        self._root = scope_factory(self)
        self._task_group = task_group  # runs the network links
        self._registry: dict[str, Ref] = {}
        self._listeners: list[Listener] = []
        self._peers: list[Peer] = []

    async def spawn(
        self,
        factory: Callable[[], Actor],
        *,
        name: str,
        mailbox_size: int = 1000,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> Ref:
        """Start an in-process actor built by ``factory()``; return its Ref once on_start is done.

        ``stop_timeout`` bounds its stop (the message in hand, its children, on_stop).

        Raises:
            ActorError: on_start raised.
        """
        return await self._root.spawn(
            factory, name=name, mailbox_size=mailbox_size, stop_timeout=stop_timeout
        )

    async def spawn_process(
        self,
        target: str,
        *,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        parent: Ref | None = None,
        mailbox_size: int = 1000,
        options: ProcessOptions | None = None,
    ) -> Ref:
        """Start ``"package.module:ClassName"`` as an actor in a new child process.

        The class is built in the child as ``ClassName(*args, **kwargs)``; arguments must be
        msgspec-encodable (Structs keep their type). Messages the child sends to its
        ``parent`` are delivered to ``parent`` here. Returns once the child's on_start is done.

        Raises:
            ActorError: the child could not import or build the actor, or on_start raised.
            ProcessExited: the child died before it started.
        """
        return await self._root.spawn_process(
            target,
            name=name,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            parent=parent,
            mailbox_size=mailbox_size,
            options=options,
        )

    # -- network links (see actors._net) ---------------------------------------------------

    def register(self, name: str, ref: Ref) -> None:
        """Let the nodes linked to this system reach ``ref`` as ``name`` (``peer.ref(name)``).

        Raises:
            ValueError: another actor is registered under that name.
        """
        if self._registry.get(name, ref) is not ref:
            raise ValueError(f"an actor is registered as {name!r} already")
        self._registry[name] = ref

    def unregister(self, name: str) -> None:
        """Make the actor registered as ``name`` unreachable from other nodes."""
        self._registry.pop(name, None)

    def registered(self, name: str) -> Ref | None:
        """The actor registered as ``name``, if any."""
        return self._registry.get(name)

    async def listen(
        self,
        host: str,
        port: int,
        *,
        tls: ServerTLS,
        name: str,
        options: LinkOptions | None = None,
        check_names: bool = True,
        on_connect: Callable[[Peer], object] | None = None,
    ) -> Listener:
        """Accept links from other nodes on ``host:port`` (port 0: any free one, see
        ``listener.address``), under mutual TLS; ``name`` is this node's name in the hello.
        Returns once the port is open; closing the system (or the listener) closes it.

        With ``check_names`` a node must call itself by a name its certificate carries.
        ``on_connect(peer)`` is called each time a node's link comes up.

        Raises:
            OSError: the port cannot be opened.
            ValueError: a certificate file cannot be loaded.
        """
        from ._listener import Listener
        from ._net import LinkOptions

        listener = Listener(
            self,
            host,
            port,
            tls,
            name=name,
            options=options or LinkOptions(),
            check_names=check_names,
            on_connect=on_connect,
        )
        started: Listener = await self._links().start(listener.serve)
        self._listeners.append(listener)
        return started

    async def connect(
        self,
        address: tuple[str, int],
        *,
        tls: ClientTLS,
        name: str,
        options: LinkOptions | None = None,
        addresses: Callable[[], Sequence[tuple[str, int]]] | None = None,
    ) -> Peer:
        """Link to the node listening at ``address`` under mutual TLS; ``name`` is this node's
        name in the hello. The link is set up again, with backoff, whenever it drops, until
        ``peer.close()`` or the system closes; ``peer.ref(name)`` reaches the actors the other
        node registered, and that node reaches ours the same way. With ``addresses``, a dropped
        link is set up again with the first of them that accepts, tried in turn (each server's
        certificate must be named for the address it is reached at): one node that moves.

        Raises:
            LinkRefused: a certificate or the hello was refused (the message says which).
            OSError: the node cannot be reached (TimeoutError past the handshake timeout).
            ValueError: a certificate file cannot be loaded.
        """
        from ._connector import Connector
        from ._net import LinkOptions

        connector = Connector(self, address, tls, name, options or LinkOptions(), addresses)
        peer: Peer = await self._links().start(connector.run)
        self._peers.append(peer)
        return peer

    def _links(self) -> TaskGroup:
        if self._task_group is None:
            raise RuntimeError("this actor system has no task group for network links (use open_system)")
        return self._task_group

    @property
    def stop_budget(self) -> float:
        """The most aclose() may take: each actor's stop budget, one after another."""
        return self._root.stop_budget

    async def aclose(self) -> None:
        """Stop every actor, newest first (each stops its own children first), then close the
        network links."""
        await self._root.aclose()
        for listener in self._listeners:
            await listener.aclose()
        for peer in self._peers:
            peer.close()


@asynccontextmanager
async def open_system() -> AsyncIterator[ActorSystem]:
    """Open an actor system; leaving the block stops every actor and child process it started.

    The event loop is watched for stalls from then on (see _stall: each is logged, naming the
    handler that held the loop).
    """
    install_stall_detector()
    async with anyio.create_task_group() as task_group:
        system = ActorSystem(lambda owner: Scope(owner, task_group), AskTimer(task_group), task_group)
        try:
            yield system
        finally:
            budget = system.stop_budget + CLOSE_MARGIN
            with anyio.move_on_after(budget, shield=True) as closing:
                await system.aclose()
            if closing.cancel_called:
                logger.error("the actor system did not stop within %g s: cancelling what is left", budget)
            task_group.cancel_scope.cancel()
