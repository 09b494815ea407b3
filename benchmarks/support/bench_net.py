"""Network helpers the benchmarks share."""

from __future__ import annotations

import anyio


async def wait_listening(port: int, seconds: float = 20.0) -> None:
    """Poll 127.0.0.1:``port`` until something accepts a connection (fail after ``seconds``)."""
    with anyio.fail_after(seconds):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return
