"""`fabric chaos net --delay` on a joined host whose kernel has no netem: the controller delays
what the host sends on its own paths instead (its link's delay hook, the load balancers' latency
toxic on the replies of the instances at the host's address), and undoes both at the end. A real
host agent in a namespace host, a real load balancer over a server there and one here."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import anyio
import anyio.abc
import pytest

from fabric.chaos.net import network_fault
from fabric.controller.chaos.faults import World
from fabric.controller.chaos.messages import Target
from fabric.controller.chaos.net import net_fault
from fabric.controller.messages import ControllerError
from fabric.host.net_faults import NetFault
from fabric.network import Backend, EndpointSpec, open_load_balancer
from tests.fabric.chaos.test_net import HostsStandIn
from tests.fabric.host.test_net_faults import agent_in, host, netem_missing, start_server
from tests.netns import NetHost, make_net_hosts

__all__ = ["host", "make_net_hosts"]  # fixtures, used by name below

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

DELAY = 0.5


async def took(call: Callable[[], Awaitable[object]]) -> tuple[float, object]:
    """Seconds ``call`` took, and what it answered."""
    start = time.monotonic()
    answer = await call()
    return time.monotonic() - start, answer


async def through(port: int) -> bytes:
    """What a fresh connection through the balancer at 127.0.0.1:``port`` is answered."""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            return await stream.receive()


async def test_a_delay_without_netem_slows_the_hosts_link_and_its_instances_replies_until_undone(
    host: NetHost,
) -> None:
    if netem_missing(host) is None:
        pytest.skip("this kernel has netem: the host delays with it (test_a_delay_with_netem)")
    far = start_server(host)  # answers "up", in the namespace host

    async def here(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"lo")

    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(listener.serve, here)
        near = listener.extra(anyio.abc.SocketAttribute.local_port)
        backends = [Backend("far", host.address, far), Backend("near", "127.0.0.1", near)]
        async with (
            open_load_balancer(EndpointSpec("Web/HttpIn"), backends) as lb,
            agent_in(host) as agent,
        ):
            port = lb.address[1]
            hosts = HostsStandIn(agent.ref)
            hosts.hosts["far-1"].ref, hosts.hosts["far-1"].address = agent.ref, host.address
            state = SimpleNamespace(
                hosts=hosts,
                rotation=SimpleNamespace(balancers=lambda: [lb]),
                deployments={},
                pool="p",
                find=lambda *a: None,
            )
            world = World(state=state, controller=agent.ref)  # type: ignore[arg-type]

            async def ask() -> object:
                return await agent.ref.ask(NetFault(id="none", action="clear"), timeout=15)

            async def timings() -> tuple[float, dict[bytes, list[float]]]:
                """The quickest of 3 asks over the host's link; each answer through the balancer
                with how long it took (6 connections, round robin over the two backends)."""
                asks = [(await took(ask))[0] for _ in range(3)]
                replies: dict[bytes, list[float]] = {}
                for _ in range(6):
                    seconds, answer = await took(lambda: through(port))
                    replies.setdefault(answer, []).append(seconds)  # type: ignore[arg-type]
                return min(asks), replies

            fault = network_fault(Target(host="far-1"), delay=f"{DELAY}s", jitter="50ms", duration="60s")
            applied = await net_fault(world, fault)
            assert applied.undo is not None
            assert "without netem" in applied.detail and "actor link delay" in applied.detail
            assert (
                f"at {host.address} 500 ms +- 50 ms through 1 load balancer(s) (latency toxic)"
                in applied.detail
            )
            # nothing was left on the host: no qdisc, no table
            assert "netem" not in agent.qdiscs() and agent.nft_tables() == []
            with pytest.raises(ControllerError) as again:
                await net_fault(world, fault)
            assert again.value.status == 409 and "already in force" in again.value.message

            quickest, replies = await timings()
            assert quickest >= DELAY, quickest
            assert sorted(replies) == [b"lo", b"up"], replies
            assert min(replies[b"up"]) >= DELAY - 0.05, replies  # netem's +- jitter
            assert min(replies[b"lo"]) < DELAY, replies  # the other machine's instance: not delayed

            assert "removed" in await applied.undo()
            quickest, replies = await timings()
            assert quickest < DELAY and min(replies[b"up"]) < DELAY, (quickest, replies)
            assert lb.toxics() == {}
            tg.cancel_scope.cancel()
