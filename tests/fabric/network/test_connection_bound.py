"""The balancers of one process hold a bounded number of user-space connections in all (two
descriptors each): past it a new client is reset at once, so that a flood through them (a
tenant's role opening connections to a public or instance endpoint on this machine) leaves
`fabric serve` descriptors for its API, links and files; the connections held go on."""

from __future__ import annotations

import anyio
import pytest

from fabric.network import EndpointSpec, _tcp, open_load_balancer

WEB = EndpointSpec("HttpIn", "http", 0)


async def test_connections_past_the_process_bound_are_reset(farm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDDOG_LB_KERNEL", "off")  # the kernel path holds no descriptor of ours
    monkeypatch.setattr(_tcp, "MAX_OPEN", 3)
    (a,) = await farm.instances(1)
    async with (
        open_load_balancer(WEB, [a.backend()]) as lb,
        open_load_balancer(EndpointSpec("Other", "tcp", 0), [a.backend()]) as other,
    ):
        held = [
            await farm.connect(lb.address),
            await farm.connect(lb.address),
            await farm.connect(other.address),
        ]
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError, TimeoutError)):
            await farm.connect(lb.address)  # reset: nothing answers it
        assert [await c.echo(b"still here\n") for c in held] == [b"still here\n"] * 3
        assert lb.stats().rejected == 1
        await held[0].aclose()
        with anyio.fail_after(10):
            while True:  # its place is free once the balancer saw it close
                try:
                    held.append(await farm.connect(lb.address))
                    break
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    await anyio.sleep(0.05)
        for c in held:
            await c.aclose()
