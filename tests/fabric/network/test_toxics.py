"""Toxics: latency, bandwidth, timeout, reset_peer and slow_close, observable by a client.

A toxic reaches connections opened before it on the user-space path only: the tests toxifying
an open connection open it there (kernel=False). The kernel data path, the default as root,
sends new connections through user space while a toxic is in force and leaves its own open
connections alone (tests/fabric/network/test_kernel_path.py).
"""

from __future__ import annotations

import anyio
import pytest

from fabric.network import (
    Bandwidth,
    EndpointSpec,
    InvalidSpecError,
    Latency,
    ResetPeer,
    SlowClose,
    Timeout,
    ToxicsUnsupportedError,
    UnknownToxicError,
    open_load_balancer,
)

WEB = EndpointSpec("HttpIn", "http", 0)
GONE = (anyio.EndOfStream, anyio.BrokenResourceError)


async def round_trip(client, data=b"ping") -> float:
    start = anyio.current_time()
    with anyio.fail_after(5):
        assert await client.echo(data) == data
    return anyio.current_time() - start


async def test_latency_delays_an_open_connection_and_goes_away(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=False) as lb:
        client = await farm.connect(lb.address)
        plain = await round_trip(client)
        toxic = lb.add_toxic(Latency(latency=150, jitter=10))
        delayed = await round_trip(client)
        lb.remove_toxic(toxic)
        after = await round_trip(client)
    assert delayed >= 0.14 > plain
    assert after < 0.14


async def test_latency_on_both_streams_adds_up_for_new_connections(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()]) as lb:
        lb.add_toxic(Latency(latency=60, stream="upstream"))
        lb.add_toxic(Latency(latency=60, stream="downstream"))
        await lb.synced()  # on the kernel data path: new connections go through user space
        client = await farm.connect(lb.address)
        assert await round_trip(client) >= 0.115


async def test_latency_keeps_a_stream_flowing(farm):
    # Chunks are delayed from their arrival, not one after another: 40 chunks
    # behind a 100 ms latency take about 100 ms more, not 4 s.
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=False) as lb:
        client = await farm.connect(lb.address)
        lb.add_toxic(Latency(latency=100, stream="upstream"))
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(40):
                await client.stream.send(b"x" * 1000)
                await anyio.sleep(0.005)
            with anyio.fail_after(5):
                await client.read_exactly(40_000)
            tg.cancel_scope.cancel()
        assert 0.1 <= anyio.current_time() - start < 1.5


async def test_bandwidth_caps_the_rate(farm):
    (a,) = await farm.instances(1)
    payload = b"z" * 64 * 1024
    async with open_load_balancer(WEB, [a.backend()], kernel=False) as lb:
        client = await farm.connect(lb.address)
        fast = await round_trip(client, payload)
        lb.add_toxic(Bandwidth(rate=128))  # KB/s: 64 KiB takes 0.5 s
        slow = await round_trip(client, payload)
    assert fast < 0.25
    assert 0.45 <= slow < 3


async def test_timeout_stops_data_then_closes(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=False) as lb:
        client = await farm.connect(lb.address)
        start = anyio.current_time()
        lb.add_toxic(Timeout(timeout=200))
        await client.stream.send(b"lost")
        with anyio.fail_after(5), pytest.raises(GONE):
            await client.stream.receive()  # nothing comes back, then the close
        assert anyio.current_time() - start >= 0.19


async def test_timeout_zero_holds_the_connection_without_data(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=False) as lb:
        client = await farm.connect(lb.address)
        toxic = lb.add_toxic(Timeout(timeout=0))
        await client.stream.send(b"dropped")
        with anyio.move_on_after(0.3) as waited:
            await client.stream.receive()
        assert waited.cancelled_caught  # stalled: neither data nor close
        lb.remove_toxic(toxic)
        assert await round_trip(client, b"back") < 1


async def test_reset_peer_resets_the_client(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=False) as lb:
        client = await farm.connect(lb.address)
        lb.add_toxic(ResetPeer(timeout=100, stream="upstream"))
        start = anyio.current_time()
        await client.stream.send(b"doomed")
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError) as caught:
            await client.stream.receive()
        assert isinstance(caught.value.__cause__, ConnectionResetError)
        assert anyio.current_time() - start >= 0.09


async def test_slow_close_holds_back_the_end_of_stream(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=False) as lb:
        client = await farm.connect(lb.address)
        lb.add_toxic(SlowClose(delay=200))
        start = anyio.current_time()
        await client.stream.send_eof()  # the instance answers by closing
        with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
            await client.stream.receive()
        assert anyio.current_time() - start >= 0.19


async def test_toxicity_zero_spares_every_connection(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()]) as lb:
        lb.add_toxic(Latency(latency=300, toxicity=0.0))
        await lb.synced()
        client = await farm.connect(lb.address)
        assert await round_trip(client) < 0.25


async def test_clear_toxics_restores_the_fast_path(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=False) as lb:
        client = await farm.connect(lb.address)
        lb.add_toxic(Latency(latency=300))
        lb.add_toxic(Bandwidth(rate=1000))
        assert set(lb.toxics()) == {"latency_downstream_1", "bandwidth_downstream_2"}
        assert await round_trip(client) >= 0.29
        lb.clear_toxics()
        assert lb.toxics() == {}
        assert await round_trip(client) < 0.25


async def test_toxic_errors_are_named(farm):
    async with open_load_balancer(WEB, toxics=False) as plain:
        with pytest.raises(ToxicsUnsupportedError, match="toxics=True"):
            plain.add_toxic(Latency(latency=1))
    async with open_load_balancer(EndpointSpec("Dns", "udp", 0)) as udp:
        with pytest.raises(ToxicsUnsupportedError, match="UDP"):
            udp.add_toxic(Latency(latency=1))
    async with open_load_balancer(WEB) as lb:
        with pytest.raises(UnknownToxicError, match="add_toxic"):
            lb.remove_toxic("latency_downstream_9")
    with pytest.raises(InvalidSpecError):
        Latency(latency=-5)
    with pytest.raises(InvalidSpecError):
        Bandwidth(rate=0)
    with pytest.raises(InvalidSpecError):
        Timeout(timeout=10, toxicity=1.5)


async def test_a_removed_timeout_toxic_holds_nothing_open(farm, until):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()]) as lb:
        client = await farm.connect(lb.address)
        lb.remove_toxic(lb.add_toxic(Timeout(timeout=30_000)))
        assert await round_trip(client) < 1
        await client.aclose()
        # The connection ends with its client, not when the toxic's timer would fire.
        await until(lambda: lb.stats().active == 0, 2.0)


async def test_a_toxic_attached_during_a_bulk_transfer_shapes_the_rest_of_it_in_order(farm):
    (a,) = await farm.instances(1)
    payload = bytes(range(256)) * 4 * 8192  # 8 MiB: the pumps move it by splice(2)
    async with open_load_balancer(WEB, [a.backend()], kernel=False) as lb:
        client = await farm.connect(lb.address)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.stream.send, payload)
            with anyio.fail_after(20):
                first = await client.read_exactly(1 << 20)
                lb.add_toxic(Bandwidth(rate=16 * 1024))  # 16 MiB/s: the other 7 MiB take >= 0.4 s
                start = anyio.current_time()
                rest = await client.read_exactly(len(payload) - len(first))
        assert first + rest == payload
        assert anyio.current_time() - start >= 0.3
