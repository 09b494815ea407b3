"""The actors of the link stress test (tests/actors/test_link_stress.py): sinks that check the
order of each sender's numbers, and the node in a child process that links back to the test
over TLS and blasts both links while the test blasts it."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from actors import Actor, ActorDead, ClientTLS, LinkOptions, Peer, Ref

#: Mailboxes this small are full most of the time under the blast: every wait for room is hit.
SMALL = 2
LINK = LinkOptions(reconnect_min=0.05, reconnect_max=0.5, handshake_timeout=10.0)


class Seq(msgspec.Struct, frozen=True):
    """The ``n``th message of ``sender`` to one target (told or asked: answered with ``n``)."""

    sender: str
    n: int


class Report(msgspec.Struct, frozen=True):
    """Ask a sink (or the node) what it saw: for each sender, the numbers in arrival order."""


class Echo(Actor):
    """Answers with the message."""

    async def receive(self, message: Any) -> Any:
        return message


class Sink(Actor):
    """Records each sender's numbers; every third message waits a scheduler pass (its handler
    gives the link back), every seventh asks across the link (``far``) before it answers."""

    def __init__(self, far: Ref | None = None, quit_after: int | None = None) -> None:
        self.far = far
        self.quit_after = quit_after
        self.seen: dict[str, list[int]] = {}
        self.count = 0

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Report):
            return self.seen
        if not isinstance(message, Seq):
            return message  # (an echo)
        self.seen.setdefault(message.sender, []).append(message.n)
        self.count += 1
        if self.count % 3 == 0:
            await anyio.lowlevel.checkpoint()
        if self.far is not None and self.count % 7 == 0:
            assert await self.far.ask(message, timeout=30) == message
        if self.quit_after is not None and self.count >= self.quit_after:
            self.stop()  # mid-stream: what follows is refused (asks) or lost (tells)
        return message.n


async def blast(sender: str, target: Ref, count: int, *, may_die: bool = False) -> int:
    """Send ``count`` numbers, an ask every fifth and tells between; return how many went
    before the target died (``may_die``), else all."""
    for n in range(count):
        message = Seq(sender, n)
        try:
            if n % 5 == 4:
                assert await target.ask(message, timeout=30) == n
            else:
                await target.tell(message)
        except ActorDead:
            if not may_die:
                raise
            return n
    return count


class StressNode(Actor):
    """A node in a child process: ``sinks`` sinks registered as c0, c1, ... and a quitter "cq";
    linked back to the test's node over TLS; records the test's numbers sent to it over the
    process link; "go" blasts the test's sinks (p0, ..., "pq") and its parent, "done" waits
    for that."""

    def __init__(self, cert: str, key: str, ca: str, port: int, sinks: int, count: int) -> None:
        self.tls = ClientTLS(cert, key, ca, "controller")
        self.port, self.sinks, self.count = port, sinks, count
        self.seen: dict[str, list[int]] = {}
        self.peer: Peer | None = None
        self.finished = anyio.Event()
        self.failure: BaseException | None = None

    async def on_start(self) -> None:
        self.peer = await self.system.connect(
            ("127.0.0.1", self.port), tls=self.tls, name="child", options=LINK
        )
        far = self.peer.ref("echo")
        self.system.register("echo", await self.spawn(Echo, name="echo"))
        for i in range(self.sinks):
            self.system.register(
                f"c{i}", await self.spawn(lambda: Sink(far), name=f"c{i}", mailbox_size=SMALL)
            )
        self.system.register(
            "cq", await self.spawn(lambda: Sink(quit_after=60), name="cq", mailbox_size=SMALL)
        )

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Seq):
            self.seen.setdefault(message.sender, []).append(message.n)
            return message.n
        if message == "go":
            self.start_soon(self._go)
            return "going"
        if message == "done":
            await self.finished.wait()
            if self.failure is not None:
                raise self.failure
            return "done"
        if isinstance(message, Report):
            assert self.peer is not None
            sinks = {f"c{i}": await self._local(f"c{i}").ask(Report()) for i in range(self.sinks)}
            return {"node": self.seen, **sinks}
        return message

    def _local(self, name: str) -> Ref:
        ref = self.system.registered(name)
        assert ref is not None
        return ref

    async def _go(self) -> None:
        assert self.peer is not None and self.parent is not None
        try:
            async with anyio.create_task_group() as task_group:
                for i in range(self.sinks):
                    task_group.start_soon(blast, f"child-{i}", self.peer.ref(f"p{i}"), self.count)
                task_group.start_soon(blast, "child-up", self.parent, self.count)
                task_group.start_soon(lambda: blast("child-q", self.peer.ref("pq"), self.count, may_die=True))
        except BaseException as exc:
            self.failure = exc
            raise
        finally:
            self.finished.set()


class Coordinator(Actor):
    """The test's side of the process link: "start" spawns the StressNode as its child (with
    these arguments) and answers its Ref; records the numbers the node sends it."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.seen: dict[str, list[int]] = {}

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Seq):
            self.seen.setdefault(message.sender, []).append(message.n)
            return message.n
        if message == "start":
            return await self.spawn_process(
                "tests.actors.stress_actors:StressNode", name="stress", args=self.args, mailbox_size=SMALL
            )
        if isinstance(message, Report):
            return self.seen
        return message
