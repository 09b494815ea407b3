"""Network link benchmark: tell and ask over a TLS actor link beside a raw TLS socket between
the same two processes, in the same run.

    .venv/bin/python benchmarks/tls_link.py [--quick]

Figures (goals from issue 12), each a median of rounds that alternate the link and its baseline
(so that a load that comes and goes on a shared machine weighs on both alike):
- tell throughput: ``await ref.tell(item)`` in a loop over the link until the far actor has
  counted them all, vs the same Items written as length-prefixed msgpack frames raw over a TLS
  socket in 64 KiB writes (the batching the link does by itself) to a reader thread that
  decodes each (goal: link >= 0.8x raw). Per message the raw sender encodes the Item into its
  buffer and writes its length prefix; the raw reader cuts the frame out of what it read and
  decodes it into an Item (msgspec), and counts it: the same framing and decoding of the same
  Item bytes as the link, without an actor. The link's tells to one actor travel in TELLS
  frames (one envelope for a run of them: see actors._wire) and each goes to the registered
  actor through its mailbox and its handler;
- ask round trip over the link vs a raw TLS ping-pong with an echo served on the far node's
  own event loop (goal: link <= 2x raw);
and, for scale, tells over a process link (a socketpair, no TLS) in the same run, and the
ping-pong through anyio's TLSStream (the stream design the link does not use: see actors._tls).
Both nodes run trio; the far node is a child process (benchmarks/support/bench_tls_helpers.py).
"""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE / "support"))
sys.path.insert(0, str(ROOT))

from bench_actors_helpers import Count, Item  # noqa: E402
from bench_timing import seconds_per_call, send_frames  # noqa: E402

from actors import ActorSystem, ClientTLS, LinkOptions, ProcessOptions, Ref, open_system  # noqa: E402
from actors._loopcalls import loop_calls  # noqa: E402
from tests.actors.tls_certs import CA  # noqa: E402

QUICK = "--quick" in sys.argv
N_TELL = 50_000 if QUICK else 200_000  # per round (the far CPU is read in 10 ms ticks)
N_ASK = 500 if QUICK else 2_000
ROUNDS = 5 if QUICK else 7
MANY_SIZE = 100  # messages a tell_many call, in the form that sends them in small batches


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds / 1000:8.1f} k msg/s"


#: one round: (the seconds it reports, this process's CPU seconds, the far process's)
Round = tuple[float, float, float]


class Meter:
    """Wall-clock seconds, and the CPU seconds this process and the far one spent, per round."""

    def __init__(self, far_pid: int) -> None:
        self._far = psutil.Process(far_pid)
        self._tasks = Path(f"/proc/{far_pid}/task")

    def _far_cpu(self) -> float:
        """The far process's CPU seconds: from the scheduler's nanosecond count of each of its
        threads where the kernel keeps one (the 10 ms ticks of cpu_times are coarse beside a
        round's ~100 ms of far CPU), else from cpu_times."""
        try:
            return (
                sum(int((task / "schedstat").read_text().split()[0]) for task in self._tasks.iterdir()) / 1e9
            )
        except OSError:
            far = self._far.cpu_times()
            return float(far.user + far.system)

    def _now(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), self._far_cpu()

    async def round(self, run: Callable[[], Awaitable[float]]) -> Round:
        """(the seconds ``run`` reports, near CPU seconds, far CPU seconds) of one round."""
        _, near, far = self._now()
        seconds = await run()
        _, near_after, far_after = self._now()
        return seconds, near_after - near, far_after - far


def raw_tls_tells(port: int, context: ssl.SSLContext, items: list[Item]) -> float:
    """Seconds to write the Items raw over TLS (64 KiB batches) until the far side acks them."""
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname="far") as conn:
            conn.sendall(len(items).to_bytes(8, "big"))
            return send_frames(conn, items)


async def link_tells(sink: Ref, items: list[Item]) -> float:
    """Seconds to tell the Items to the far node's sink over the link until it counted them."""
    before = await sink.ask(Count())
    start = time.perf_counter()
    for item in items:
        await sink.tell(item)
    assert await sink.ask(Count(), timeout=120) == before + len(items)
    return time.perf_counter() - start


async def link_tell_many(sink: Ref, items: list[Item], size: int) -> float:
    """Seconds to send the Items to the far node's sink with ``tell_many``, ``size`` a call,
    until it counted them."""
    before = await sink.ask(Count())
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    start = time.perf_counter()
    for batch in batches:
        await sink.tell_many(batch)
    assert await sink.ask(Count(), timeout=120) == before + len(items)
    return time.perf_counter() - start


def cpu(rounds: list[Round], n: int) -> str:
    """The median CPU per message of each process over some rounds."""
    near = statistics.median(r[1] for r in rounds) / n
    far = statistics.median(r[2] for r in rounds) / n
    return f"near {near * 1e6:4.2f} + far {far * 1e6:4.2f} us"


def cpu_ratio(baseline: list[Round], measured: list[Round]) -> float:
    """The baseline's CPU (both processes) over the measured one's, medians of the rounds: the
    rate ratio when the two processes compete for the cores with others (a loaded machine)."""
    return statistics.median(r[1] + r[2] for r in baseline) / statistics.median(r[1] + r[2] for r in measured)


async def process_tells(system: ActorSystem) -> float:
    """Seconds to tell N Items to a process actor (a socketpair link) until it counted them."""
    items = [Item(i) for i in range(N_TELL)]
    ref = await system.spawn_process(
        "bench_actors_helpers:Sink", name="sink", options=ProcessOptions(ping_interval=None)
    )
    await ref.ask(Count())
    start = time.perf_counter()
    for item in items:
        await ref.tell(item)
    assert await ref.ask(Count(), timeout=120) == N_TELL
    elapsed = time.perf_counter() - start
    await ref.stop()
    return elapsed


async def main() -> None:
    print(f"network link benchmark (trio, TLS 1.3, {os.cpu_count()} cores){' quick' if QUICK else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        ca = CA.make(Path(tmp))
        far_cert, far_key = ca.issue("far")
        tls: ClientTLS = ca.client("near", server_name="far")
        context = tls.context()
        helper = HERE / "support" / "bench_tls_helpers.py"
        command = [sys.executable, str(helper), str(far_cert), str(far_key), str(ca.ca_path), "trio"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE / "support"), str(ROOT)])}
        far = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            assert far.stdout is not None
            link_port, echo_port, reader_port = map(int, far.stdout.readline().split())
            async with open_system() as system:
                peer = await system.connect(
                    ("127.0.0.1", link_port), tls=tls, name="near", options=LinkOptions(ping_interval=None)
                )
                sink = peer.ref("sink")
                items = [Item(i) for i in range(N_TELL)]
                forms: dict[str, Callable[[], Awaitable[float]]] = {
                    "tell (a call a message)": partial(link_tells, sink, items),
                    f"tell_many ({MANY_SIZE} a call)": partial(link_tell_many, sink, items, MANY_SIZE),
                    "tell_many (all in one call)": partial(link_tell_many, sink, items, len(items)),
                }
                over_raw = partial(anyio.to_thread.run_sync, raw_tls_tells, reader_port, context, items)
                meter = Meter(far.pid)
                for form in forms.values():  # warm every path up
                    await form()
                await over_raw()
                measured: dict[str, list[Round]] = {name: [] for name in forms}
                raws: list[Round] = []
                for _ in range(ROUNDS):  # each form, then the raw socket, in every round
                    for name, form in forms.items():
                        measured[name].append(await meter.round(form))
                    raws.append(await meter.round(over_raw))
                raw = statistics.median(r[0] for r in raws)
                print(
                    f"raw TLS socket:  {rate(N_TELL, raw)};  CPU per message {cpu(raws, N_TELL)}"
                    f"  (medians of {ROUNDS} rounds)"
                )
                print(
                    "  (per message: encode the Item + write its length prefix; read, cut the frame"
                    " out, decode it into an Item (msgspec), count it)"
                )
                for name, links in measured.items():
                    ratios = sorted(r[0] / k[0] for r, k in zip(raws, links, strict=True))
                    link = statistics.median(k[0] for k in links)
                    print(
                        f"{name + ' over the TLS link:':44} {rate(N_TELL, link)}   ratio"
                        f" {statistics.median(ratios):4.2f}x ({ratios[0]:4.2f}-{ratios[-1]:4.2f}x; goal >= 0.8x);"
                        f"  CPU {cpu(links, N_TELL)} (CPU ratio {cpu_ratio(raws, links):4.2f}x)"
                    )
                link = statistics.median(k[0] for k in measured["tell (a call a message)"])
                actors, raws, stream_rtt = await ask_round_trips(sink, echo_port, context, meter)
                actor = statistics.median(a[0] for a in actors)
                raw_rtt = statistics.median(r[0] for r in raws)
                ratios = sorted(a[0] / r[0] for a, r in zip(actors, raws, strict=True))
                print(
                    f"ask over TLS link:   {actor * 1e6:8.1f} us round trip   raw TLS ping-pong {raw_rtt * 1e6:6.1f} us"
                    f"   ratio {statistics.median(ratios):4.2f}x ({ratios[0]:4.2f}-{ratios[-1]:4.2f}x; goal <= 2x);"
                    f"  {1 / actor:,.0f} asks/s;  anyio TLSStream ping-pong {stream_rtt * 1e6:6.1f} us"
                )
                print(
                    f"  CPU per round trip: link {cpu(actors, 1)};  raw TLS ping-pong {cpu(raws, 1)}"
                    f"   (CPU ratio {1 / cpu_ratio(raws, actors):4.2f}x)"
                )
                process = await process_tells(system)
                print(
                    f"for scale: tell over a process link (no TLS) {rate(N_TELL, process)}"
                    f"   (the TLS link does {process / link:4.2f}x its rate)"
                )
        finally:
            far.stdin.close()  # type: ignore[union-attr]
            far.wait(10)


async def ask_round_trips(
    sink: Ref, echo_port: int, context: ssl.SSLContext, meter: Meter
) -> tuple[list[Round], list[Round], float]:
    """The rounds of link asks and raw TLS ping-pongs (alternating; seconds and CPU seconds
    per round trip), and the median TLSStream ping-pong round trip."""
    raw = socket.create_connection(("127.0.0.1", echo_port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with context.wrap_socket(raw, server_hostname="far") as conn:
        conn.setblocking(False)
        wait_readable = loop_calls().wait_readable  # the backend's own, as the link uses

        async def ping() -> None:
            conn.send(b"ping-ping-ping-ping")
            while True:
                try:
                    if conn.recv(65536):
                        return
                except ssl.SSLWantReadError:
                    await wait_readable(conn.fileno())

        async def stream_pings() -> float:
            # The same ping through anyio's TLSStream, on a connection of its own.
            stream = await anyio.connect_tcp(
                "127.0.0.1", echo_port, ssl_context=context, tls_hostname="far", tls_standard_compatible=False
            )
            async with stream:
                start = time.perf_counter()
                for _ in range(N_ASK):
                    await stream.send(b"ping-ping-ping-ping")
                    await stream.receive()
                return (time.perf_counter() - start) / N_ASK

        asks = partial(seconds_per_call, partial(sink.ask, "ping"), N_ASK)
        pings = partial(seconds_per_call, ping, N_ASK)

        await asks()  # warm both paths up
        await pings()
        actor, baseline, streams = [], [], []
        for _ in range(ROUNDS):
            actor.append(per_call(await meter.round(asks)))
            baseline.append(per_call(await meter.round(pings)))
            streams.append(await stream_pings())
    return actor, baseline, statistics.median(streams)


def per_call(measured: Round) -> Round:
    """A round of N_ASK calls, its CPU per call."""
    seconds, near, far = measured
    return seconds, near / N_ASK, far / N_ASK


if __name__ == "__main__":
    anyio.run(main, backend="trio")
