"""Links under stress: a node in a child process, linked to the test's node over TLS and to its
parent actor over the process link, and the test blast each other's small-mailbox actors
with tells and asks in both directions while handlers wait, ask across the link, and one
actor on each side stops mid-stream. Every message arrives, in order per sender and target,
within a deadline (a lost wakeup in a link's reader or writer would hang it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import open_system
from tests.actors.stress_actors import LINK, SMALL, Coordinator, Echo, Report, Sink, blast
from tests.actors.tls_certs import CA

pytestmark = [pytest.mark.timeout(90), pytest.mark.anyio]  # on trio and on asyncio

SINKS = 4
#: numbers each sender sends each target (about 2 s a run on a loaded machine)
COUNT = int(os.environ.get("REDDOG_LINK_STRESS_COUNT", "300"))


async def test_every_message_arrives_in_order_over_both_links_under_stress(tmp_path: Path) -> None:
    ca = CA.make(tmp_path / "ca")
    client = ca.client("child")
    async with open_system() as system:
        listener = await system.listen("127.0.0.1", 0, tls=ca.server(), name="controller", options=LINK)
        system.register("echo", await system.spawn(Echo, name="echo"))
        coordinator = await system.spawn(
            lambda: Coordinator(
                str(client.cert), str(client.key), str(client.ca), listener.address[1], SINKS, COUNT
            ),
            name="coordinator",
            mailbox_size=SMALL,
        )
        with anyio.fail_after(60):  # the deadline: a lost wakeup hangs here
            node = await coordinator.ask("start", timeout=30)
            peer = await listener.wait_peer("child")
            far = peer.ref("echo")
            sinks = [Sink(far) for _ in range(SINKS)]
            for i, sink in enumerate(sinks):
                system.register(
                    f"p{i}", await system.spawn(lambda s=sink: s, name=f"p{i}", mailbox_size=SMALL)
                )
            quitter = Sink(quit_after=60)
            system.register("pq", await system.spawn(lambda: quitter, name="pq", mailbox_size=SMALL))
            async with anyio.create_task_group() as task_group:
                assert await node.ask("go", timeout=30) == "going"
                for i in range(SINKS):
                    task_group.start_soon(blast, f"parent-{i}", peer.ref(f"c{i}"), COUNT)
                task_group.start_soon(blast, "parent-down", node, COUNT)
                task_group.start_soon(lambda: blast("parent-q", peer.ref("cq"), COUNT, may_die=True))
            assert await node.ask("done", timeout=50) == "done"
            far_side: dict[str, Any] = await node.ask(Report(), timeout=30)
            up = await coordinator.ask(Report())
        every = list(range(COUNT))
        assert far_side["node"] == {"parent-down": every}  # parent -> child, process link
        assert up == {"child-up": every}  # child -> parent, process link
        for i in range(SINKS):
            assert far_side[f"c{i}"] == {f"parent-{i}": every}  # over TLS, test -> child
            assert sinks[i].seen == {f"child-{i}": every}  # over TLS, child -> test
        # The quitter took its numbers in order until it stopped; the rest were refused.
        taken = quitter.seen["child-q"]
        assert 60 <= len(taken) < COUNT and taken == list(range(len(taken)))
