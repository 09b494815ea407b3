"""Chaos costs nothing while idle: the load balancer and actor links with chaos loaded and idle,
beside the same paths that chaos never touched, measured in the same run.

Usage: .venv/bin/python benchmarks/chaos.py [--rounds 5] [--seconds 2] [--quick] [--only lb|links]

"Loaded and idle" means every chaos module imported (the agent, faults, watches, scenarios) and
a fault applied and undone on the very path measured: a latency toxic added to, then removed
from, the load balancer; a delay set on, then cleared from, the actor link. Each pair is
measured in interleaved rounds (so a noisy moment hits both) and the medians are compared.

- load balancer: HTTP requests/s through a toxic-capable balancer to a raw keep-alive server
  (benchmarks/load_balancer.py's site and load client, in child processes);
- actor link: cross-process tell throughput and ask round trip to a process actor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Keep this folder off the import path (its actors.py is not the package); the helpers on it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE / "support"))
sys.path.insert(0, str(ROOT))

from bench_actors_helpers import Count, Item  # noqa: E402
from bench_net import wait_listening  # noqa: E402

from actors import ProcessOptions, Ref, open_system  # noqa: E402
from fabric.network import Backend, EndpointSpec, Latency, open_load_balancer  # noqa: E402

OPTIONS = ProcessOptions(ping_interval=None)
LB_SCRIPT = str(HERE / "load_balancer.py")


def load_chaos() -> None:
    """Import every chaos module the fabric loads once chaos is used."""
    import fabric.chaos.runner
    import fabric.controller.chaos.agent
    import fabric.controller.chaos.storage
    import fabric.controller.chaos.storm  # noqa: F401


async def interleaved(
    rounds: int, paths: dict[str, Callable[[], Awaitable[float]]]
) -> dict[str, list[float]]:
    """Each path once per round, in turn."""
    results: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, measure in paths.items():
            results[name].append(await measure())
    return results


def line(label: str, values: list[float], base: float, unit: str) -> str:
    """One result line: the median, its ratio to ``base``, and the range."""
    med = statistics.median(values)
    spread = f"{min(values):,.1f}-{max(values):,.1f}"
    return f"  {label:<34}{med:>12,.1f} {unit:<8}{med / base:>7.3f}x   range {spread}"


# -- load balancer -----------------------------------------------------------------------------


async def bench_load_balancer(args: argparse.Namespace) -> None:
    """Requests/s through an untouched balancer and one a toxic was added to and removed from."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with await anyio.open_process([sys.executable, LB_SCRIPT, "--serve-raw", str(port)]) as server:
        try:
            await wait_listening(port)
            backend = [Backend("bench_IN_0", "127.0.0.1", port)]
            spec = EndpointSpec("bench", "http", 0)
            async with (
                open_load_balancer(spec, backend) as untouched,
                open_load_balancer(spec, backend) as chaos,
            ):
                toxic = chaos.add_toxic(Latency(latency=100))
                chaos.remove_toxic(toxic)

                async def measure(address: tuple[str, int]) -> float:
                    cmd = [
                        sys.executable,
                        LB_SCRIPT,
                        "--load",
                        str(address[1]),
                        str(args.connections),
                        str(args.seconds),
                    ]
                    out = (await anyio.run_process(cmd)).stdout.decode()
                    import json

                    return float(json.loads(out)["rps"])

                await measure(untouched.address)  # warm-up
                results = await interleaved(
                    args.rounds,
                    {
                        "untouched": lambda: measure(untouched.address),
                        "chaos": lambda: measure(chaos.address),
                    },
                )
        finally:
            server.kill()
    base = statistics.median(results["untouched"])
    print(
        f"\nload balancer: requests/s, {args.connections} keep-alive connections, median of {args.rounds} rounds"
    )
    print(line("toxic-capable, never touched", results["untouched"], base, "req/s"))
    print(line("chaos loaded, toxic added+removed", results["chaos"], base, "req/s"))


# -- actor links -------------------------------------------------------------------------------


async def tells(ref: Ref, n: int) -> float:
    """Cross-process tells per second (thousands) to ``ref``."""
    before = await ref.ask(Count())
    items = [Item(i) for i in range(n)]
    start = time.perf_counter()
    for item in items:
        await ref.tell(item)
    assert await ref.ask(Count(), timeout=120) == before + n
    return n / (time.perf_counter() - start) / 1000


async def asks(ref: Ref, n: int) -> float:
    """Mean ask round trip to ``ref``, in microseconds."""
    start = time.perf_counter()
    for _ in range(n):
        await ref.ask("ping")
    return (time.perf_counter() - start) / n * 1e6


async def bench_links(args: argparse.Namespace) -> None:
    """Tells and asks over an untouched link and one a delay was set on and cleared from."""
    n_tell, n_ask = (20_000, 1_000) if args.quick else (100_000, 5_000)
    async with open_system() as system:
        untouched = await system.spawn_process("bench_actors_helpers:Sink", name="untouched", options=OPTIONS)
        chaos = await system.spawn_process("bench_actors_helpers:Sink", name="chaos", options=OPTIONS)
        faults = chaos.faults
        assert faults is not None
        faults.delay(0.01, 0.01)  # what a chaos link fault does, then its undo
        faults.clear()
        for ref in (untouched, chaos):
            await asks(ref, 200)
        tell = await interleaved(
            args.rounds,
            {"untouched": lambda: tells(untouched, n_tell), "chaos": lambda: tells(chaos, n_tell)},
        )
        ask = await interleaved(
            args.rounds, {"untouched": lambda: asks(untouched, n_ask), "chaos": lambda: asks(chaos, n_ask)}
        )
    print(f"\nactor link (cross-process), median of {args.rounds} rounds")
    base = statistics.median(tell["untouched"])
    print(line("tell, link never touched", tell["untouched"], base, "k msg/s"))
    print(line("tell, chaos delay set+cleared", tell["chaos"], base, "k msg/s"))
    base = statistics.median(ask["untouched"])
    print(line("ask round trip, never touched", ask["untouched"], base, "us"))
    print(line("ask round trip, set+cleared", ask["chaos"], base, "us"))


async def main(args: argparse.Namespace) -> None:
    """Both figures, chaos loaded."""
    load_chaos()
    print("chaos idle cost (ratios near 1.000x are within noise; run with --rounds 9 for tighter ranges)")
    if args.only in (None, "lb"):
        await bench_load_balancer(args)
    if args.only in (None, "links"):
        await bench_links(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="Fewer messages (a smoke run).")
    parser.add_argument("--only", choices=["lb", "links"], help="Measure one path only.")
    anyio.run(main, parser.parse_args(), backend="trio")
