"""Actor runtime benchmark: every figure beside a raw baseline measured in the same run.

    .venv/bin/python benchmarks/actors.py [--quick]

Figures (see the README's Performance section for the ones we measured):
- in-process tell throughput vs a raw anyio memory object stream carrying the same messages;
- cross-process tell throughput vs that same in-process raw stream, and vs a raw
  length-prefixed msgpack pipe to a child process;
- cross-process ask round trip vs a raw socket ping-pong between the same two processes;
- spawn_process to first reply (median) and the child's resident memory.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import anyio
import psutil

# This file is named after the package it measures: keep its folder off the import path, so
# that `import actors` finds the package, and put the helpers (imported by children too) on it.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE / "support"))

from bench_actors_helpers import Count, Item, RawEcho, Sink  # noqa: E402
from bench_timing import seconds_per_call, send_frames  # noqa: E402

from actors import ProcessOptions, Ref, open_system  # noqa: E402

QUICK = "--quick" in sys.argv
N_TELL = 50_000 if QUICK else 200_000
N_ASK = 500 if QUICK else 2_000
N_SPAWN = 5 if QUICK else 15
MANY = 100  # messages a tell_many call
OPTIONS = ProcessOptions(ping_interval=None)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds / 1000:8.1f} k msg/s"


async def raw_stream_throughput(n: int) -> float:
    send, receive = anyio.create_memory_object_stream[Item](1000)
    items = [Item(i) for i in range(n)]
    count = 0

    async def consume() -> None:
        nonlocal count
        async with receive:
            async for _ in receive:
                count += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        async with send:
            for item in items:
                await send.send(item)
    assert count == n
    return time.perf_counter() - start


async def tell_all(ref: Ref, items: list[Item], many: int) -> None:
    """Tell the Items: a call each (``many`` 0), or ``many`` a tell_many call."""
    if not many:
        for item in items:
            await ref.tell(item)
        return
    for batch in [items[i : i + many] for i in range(0, len(items), many)]:
        await ref.tell_many(batch)


async def local_tell_throughput(n: int, many: int = 0) -> float:
    items = [Item(i) for i in range(n)]
    async with open_system() as system:
        ref = await system.spawn(Sink, name="sink", mailbox_size=1000)
        start = time.perf_counter()
        await tell_all(ref, items, many)
        assert await ref.ask(Count()) == n
        return time.perf_counter() - start


async def process_tell_throughput(n: int, many: int = 0) -> float:
    items = [Item(i) for i in range(n)]
    async with open_system() as system:
        ref = await system.spawn_process("bench_actors_helpers:Sink", name="sink", options=OPTIONS)
        await ref.ask(Count())
        start = time.perf_counter()
        await tell_all(ref, items, many)
        assert await ref.ask(Count(), timeout=120) == n
        return time.perf_counter() - start


def raw_pipe_throughput(n: int) -> float:
    ours, theirs = socket.socketpair()
    helper = str(HERE / "support" / "bench_actors_helpers.py")
    child = subprocess.Popen(
        [sys.executable, helper, "raw", str(theirs.fileno()), str(n)], pass_fds=(theirs.fileno(),)
    )
    theirs.close()
    items = [Item(i) for i in range(n)]
    time.sleep(0.3)  # let the child import; the timed part starts at the first byte sent
    elapsed = send_frames(ours, items)
    child.wait()
    ours.close()
    return elapsed


async def ask_round_trips(n: int, rounds: int = 7) -> tuple[float, float]:
    """(actor ask, raw ping-pong) round trip in seconds, between the same two processes.

    The two alternate in rounds of n, and each figure is the median of its rounds: this
    machine's noise comes in bursts, which then hit both sides alike.
    """
    async with open_system() as system:
        ref = await system.spawn_process("bench_actors_helpers:Sink", name="sink", options=OPTIONS)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "echo.sock")
            await ref.ask(RawEcho(path))
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(path)
                conn.setblocking(False)

                async def ping() -> None:
                    conn.send(b"ping-ping-ping-ping")
                    while True:
                        try:
                            if conn.recv(65536):
                                return
                        except BlockingIOError:
                            await anyio.wait_readable(conn)

                asks = partial(seconds_per_call, partial(ref.ask, "ping"), n)
                pings = partial(seconds_per_call, ping, n)

                await asks()  # warm both paths up
                await pings()
                actor, raw = [], []
                for _ in range(rounds):
                    actor.append(await asks())
                    raw.append(await pings())
    return statistics.median(actor), statistics.median(raw)


async def spawn_to_first_reply(n: int) -> tuple[float, float]:
    """(median seconds from spawn_process to the first answer, child RSS in MiB)."""
    times: list[float] = []
    rss = 0.0
    async with open_system() as system:
        for i in range(n):
            start = time.perf_counter()
            ref = await system.spawn_process("bench_actors_helpers:Sink", name=f"s{i}", options=OPTIONS)
            await ref.ask("hello")
            times.append(time.perf_counter() - start)
            assert ref.pid is not None
            rss = psutil.Process(ref.pid).memory_info().rss / 2**20
            await ref.stop()
    return statistics.median(times), rss


async def main() -> None:
    print(f"actors benchmark (trio backend, {os.cpu_count()} cores){' quick' if QUICK else ''}")
    raw = await raw_stream_throughput(N_TELL)
    local = await local_tell_throughput(N_TELL)
    print(
        f"in-process tell:     {rate(N_TELL, local)}   raw memory stream {rate(N_TELL, raw)}   ratio {raw / local:4.2f}x (goal >= 0.8x)"
    )
    local = await local_tell_throughput(N_TELL, MANY)
    print(f"in-process tell_many ({MANY} a call): {rate(N_TELL, local)}   ratio {raw / local:4.2f}x")
    cross = await process_tell_throughput(N_TELL)
    pipe = raw_pipe_throughput(N_TELL)
    print(
        f"cross-process tell:  {rate(N_TELL, cross)}   vs in-process raw stream {raw / cross:4.2f}x (goal >= 0.8x);"
        f" raw msgpack pipe {rate(N_TELL, pipe)} ({pipe / cross:4.2f}x)"
    )
    cross = await process_tell_throughput(N_TELL, MANY)
    pipe = raw_pipe_throughput(N_TELL)
    print(
        f"cross-process tell_many ({MANY} a call): {rate(N_TELL, cross)}   raw msgpack pipe"
        f" {rate(N_TELL, pipe)} ({pipe / cross:4.2f}x)"
    )
    actor, raw_rtt = await ask_round_trips(N_ASK)
    print(
        f"cross-process ask:   {actor * 1e6:8.1f} us round trip   raw socket ping-pong {raw_rtt * 1e6:6.1f} us"
        f"   ratio {actor / raw_rtt:4.2f}x (goal <= 2x);  {1 / actor:,.0f} asks/s"
    )
    median, rss = await spawn_to_first_reply(N_SPAWN)
    print(
        f"spawn_process to first reply: median {median * 1000:6.1f} ms;  child resident memory {rss:5.1f} MiB"
    )


if __name__ == "__main__":
    anyio.run(main, backend="trio")
