"""Spreading connections over role instances, by status, with refusals and draining."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from fabric.network import (
    EndpointSpec,
    UnknownBackendError,
    open_load_balancer,
    serve_load_balancer,
)

WEB = EndpointSpec("HttpIn", "http", 0)


async def test_connections_are_spread_round_robin(farm):
    instances = await farm.instances(3)
    async with open_load_balancer(WEB, [i.backend() for i in instances]) as lb:
        names = await farm.who(lb.address, 6)
    assert Counter(names) == {"web_IN_0": 2, "web_IN_1": 2, "web_IN_2": 2}
    assert names[:3] == sorted(names[:3])  # one after the other, not by chance


async def test_not_ready_or_busy_instances_get_nothing(farm):
    a, b, c = await farm.instances(3)
    pool = [a.backend(ready=False), b.backend(busy=True), c.backend()]
    async with open_load_balancer(WEB, pool) as lb:
        assert set(await farm.who(lb.address, 4)) == {"web_IN_2"}
        assert lb.rotation() == ["web_IN_2"]
    assert a.accepted == b.accepted == 0


async def test_ignore_role_instance_status_uses_every_instance(farm):
    a, b = await farm.instances(2)
    spec = EndpointSpec("HttpIn", "http", 0, ignore_role_instance_status=True)
    async with open_load_balancer(spec, [a.backend(ready=False), b.backend(busy=True)]) as lb:
        assert set(await farm.who(lb.address, 4)) == {"web_IN_0", "web_IN_1"}


async def test_status_change_applies_to_the_next_connection(farm):
    a, b = await farm.instances(2)
    async with open_load_balancer(WEB, [a.backend(), b.backend()]) as lb:
        lb.update("web_IN_0", busy=True)
        await lb.synced()  # on the kernel data path: once its rules follow, a few ms later
        assert set(await farm.who(lb.address, 3)) == {"web_IN_1"}
        lb.update("web_IN_0", busy=False)
        lb.update("web_IN_1", ready=False)
        await lb.synced()
        assert set(await farm.who(lb.address, 3)) == {"web_IN_0"}


async def test_open_connection_survives_its_instance_going_busy(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()]) as lb:
        client = await farm.connect(lb.address)
        lb.update("web_IN_0", busy=True)
        assert await client.echo(b"still here") == b"still here"


async def test_refused_connect_is_retried_and_the_instance_leaves_rotation(farm):
    a, b = await farm.instances(2)
    a.stop()
    async with open_load_balancer(WEB, [a.backend(), b.backend()]) as lb:
        # The first connection goes to the dead instance first, and is retried.
        assert await farm.who(lb.address, 3) == ["web_IN_1"] * 3
        stats = lb.stats()
        # (a second refusal when a trial fell due meanwhile, on a slow machine)
        assert stats.refused in (1, 2) and stats.rejected == 0
        assert [s.refusing for s in stats.backends] == [True, False]
        assert lb.rotation() == ["web_IN_1"] and lb.refusing() == ["web_IN_0"]
        # The instance restarts and reports Ready: back in rotation.
        await a.start()
        lb.update("web_IN_0", ready=True)
        await lb.synced()  # on the kernel data path: once its rules follow, a few ms later
        assert set(await farm.who(lb.address, 2)) == {"web_IN_0", "web_IN_1"}


async def test_client_is_reset_when_no_instance_can_take_it(farm):
    (a,) = await farm.instances(1)
    a.stop()
    async with open_load_balancer(WEB, [a.backend()]) as lb:
        stream = await anyio.connect_tcp(*lb.address)
        with anyio.fail_after(5), pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream)):
            await stream.receive()
        await stream.aclose()
        assert lb.stats().rejected == 1


async def test_removed_instance_drains_its_open_connections(farm):
    a, b = await farm.instances(2)
    async with open_load_balancer(WEB, [a.backend()]) as lb:
        old = await farm.connect(lb.address)
        assert old.instance == "web_IN_0"
        lb.set_backends([b.backend()])
        await lb.synced()
        assert set(await farm.who(lb.address, 2)) == {"web_IN_1"}
        assert await old.echo(b"draining") == b"draining"
        await lb.count()  # the kernel data path's connections, as conntrack has them now
        draining = [s for s in lb.stats().backends if s.draining]
        assert [s.instance_id for s in draining] == ["web_IN_0"]
        assert draining[0].active == 1


async def test_half_close_is_passed_on(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()]) as lb:
        client = await farm.connect(lb.address)
        await client.stream.send(b"last words")
        await client.stream.send_eof()
        with anyio.fail_after(5):
            # The instance sees end of stream, finishes echoing, and closes.
            assert await client.read_exactly(10) == b"last words"
            with pytest.raises(anyio.EndOfStream):
                await client.stream.receive()


@pytest.mark.parametrize("kernel", [None, False])
async def test_large_transfer_arrives_intact(farm, kernel):
    (a,) = await farm.instances(1)
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB, many full 64 KiB reads
    async with open_load_balancer(WEB, [a.backend()], kernel=kernel) as lb:
        client = await farm.connect(lb.address)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.stream.send, payload)
            with anyio.fail_after(20):
                assert await client.read_exactly(len(payload)) == payload
        if lb.kernel():
            return  # bytes are counted on the user-space path only (README)
        stats = lb.stats()
        assert stats.bytes_up == len(payload)
        assert stats.bytes_down == len(payload) + len(b"web_IN_0\n")


async def test_stats_count_connections_per_instance(farm):
    a, b = await farm.instances(2)
    async with open_load_balancer(WEB, [a.backend(), b.backend()]) as lb:
        await farm.who(lb.address, 4)
        await lb.count()  # the kernel data path's connections, as nft counted them now
        stats = lb.stats()
    assert stats.connections == 4
    assert [s.connections for s in stats.backends] == [2, 2]
    assert [s.instance_id for s in stats.backends] == ["web_IN_0", "web_IN_1"]


async def test_update_of_an_unknown_instance_is_an_error(farm):
    async with open_load_balancer(WEB) as lb:
        with pytest.raises(UnknownBackendError, match="set_backends"):
            lb.update("nobody", ready=True)


async def test_serve_load_balancer_runs_in_a_callers_task_group(farm):
    (a,) = await farm.instances(1)
    async with anyio.create_task_group() as tg:
        lb = await tg.start(serve_load_balancer, WEB, [a.backend()])
        assert await farm.who(lb.address, 1) == ["web_IN_0"]
        await lb.aclose()
    with pytest.raises(OSError):
        await anyio.connect_tcp(*lb.address)
