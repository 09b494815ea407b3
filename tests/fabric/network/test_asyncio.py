"""The load balancer on anyio's asyncio backend (the rest of the suite runs on trio)."""

from __future__ import annotations

import anyio
import pytest

from fabric.network import EndpointSpec, Latency, open_load_balancer


def test_balancing_toxics_refusals_and_bulk_data_work_on_asyncio(farm_class):
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            farm = farm_class(tg)
            a, b, c = await farm.instances(3)
            c.stop()
            pool = [a.backend(), b.backend(busy=True), c.backend()]
            async with open_load_balancer(EndpointSpec("HttpIn", "http", 0), pool) as lb:
                assert await farm.who(lb.address, 3) == ["web_IN_0"] * 3
                assert lb.stats().refused >= 1 and lb.refusing() == ["web_IN_2"]
                client = await farm.connect(lb.address)
                lb.add_toxic(Latency(latency=100))
                start = anyio.current_time()
                assert await client.echo(b"slow") == b"slow"
                assert anyio.current_time() - start >= 0.09
                lb.clear_toxics()
                payload = b"0123456789abcdef" * 65536  # 1 MiB: fills socket buffers
                async with anyio.create_task_group() as sender:
                    sender.start_soon(client.stream.send, payload)
                    with anyio.fail_after(10):
                        assert await client.read_exactly(len(payload)) == payload
                await client.aclose()
            with pytest.raises(OSError):
                await anyio.connect_tcp(*lb.address)
            tg.cancel_scope.cancel()

    anyio.run(main, backend="asyncio")
