"""HTTP requests/s and bulk transfer through the load balancer against the same site
directly, same run.

Usage: .venv/bin/python benchmarks/load_balancer.py [--seconds 2] [--rounds 3]
       [--connections 64] [--server hypercorn|raw|both|none] [--bulk-mib 1024]

The site runs in a child process: hypercorn serving a tiny ASGI app (what a web role
runs), and/or a minimal keep-alive HTTP server in asyncio (far faster, so the load
balancer's own cost shows more). The load comes from ``wrk`` when it is installed
(``apt-get install wrk``), else from this file's own epoll client in another child
process. Four paths are measured in interleaved rounds and their medians printed beside
the direct baseline of the same run: direct, the kernel data path (nftables DNAT, as
root with nft; ``kernel=True``), and on the user-space path the plain pump
(``toxics=False``) and the toxic-capable pump with no toxic set. Bulk: one connection
carrying ``--bulk-mib`` MiB from a server child to a client child, through each path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from bench_net import wait_listening  # noqa: E402

from fabric.network import Backend, EndpointSpec, open_load_balancer  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
BODY = b"Hello, world!"


# --- the site (child process) -------------------------------------------------------


def serve_hypercorn(port: int) -> None:
    """Serve a one-line ASGI app with hypercorn on 127.0.0.1:port until killed."""
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from roles.hosts.http import answer_lifespan

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 60
    config.keep_alive_max_requests = 10**9
    asyncio.run(serve(app, config))  # type: ignore[arg-type]


def serve_raw(port: int) -> None:
    """Serve a canned keep-alive HTTP response per request, as fast as asyncio allows."""
    import asyncio

    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
        len(BODY),
        BODY,
    )

    class Http(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            n = self.buffer.count(b"\r\n\r\n")
            if n:
                self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]
                self.transport.write(response * n)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Http, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


# --- the load (child process) --------------------------------------------------------


def load(port: int, connections: int, seconds: float, warmup: float) -> None:
    """Keep ``connections`` keep-alive requests in flight; print completed requests/s."""
    sel = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytes] = {}

    def open_one() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        buffers[sock] = b""
        sock.send(REQUEST)

    for _ in range(connections):
        open_one()
    begin = time.perf_counter() + warmup
    end = begin + seconds
    done = 0
    while (now := time.perf_counter()) < end:
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            data = sock.recv(65536)
            if not data:  # the server ended a keep-alive connection: open another
                sel.unregister(sock)
                sock.close()
                del buffers[sock]
                open_one()
                continue
            buf = buffers[sock] + data
            while (head := buf.find(b"\r\n\r\n")) >= 0:
                match = re.search(rb"(?i)content-length:\s*(\d+)", buf[:head])
                total = head + 4 + (int(match.group(1)) if match else 0)
                if len(buf) < total:
                    break
                buf = buf[total:]
                if now >= begin:
                    done += 1
                sock.send(REQUEST)
            buffers[sock] = buf
    print(json.dumps({"rps": done / seconds}))


# --- orchestration -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(port: int, args: argparse.Namespace, seconds: int = 0) -> float:
    """Requests/s against 127.0.0.1:port, from wrk if installed, else our own client."""
    seconds = seconds or args.seconds
    wrk = shutil.which("wrk")
    if wrk:
        cmd = [wrk, "-t1", f"-c{args.connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
        out = (await anyio.run_process(cmd)).stdout.decode()
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not found:
            raise SystemExit(f"cannot read wrk's output:\n{out}")
        return float(found.group(1))
    cmd = [sys.executable, __file__, "--load", str(port), str(args.connections), str(seconds)]
    out = (await anyio.run_process(cmd)).stdout.decode()
    return float(json.loads(out)["rps"])


async def bench_server(kind: str, args: argparse.Namespace) -> None:
    """Measure one site directly and through both balancers, interleaved, in rounds."""
    port = free_port()
    cmd = [sys.executable, __file__, f"--serve-{kind}", str(port)]
    runs: dict[str, list[float]] = {p: [] for p in PATHS}
    # CPU seconds this process (the balancers' only home) spent per request: steadier
    # than requests/s when other programs share the machine.
    cpu: dict[str, list[float]] = {p: [] for p in PATHS}
    async with await anyio.open_process(cmd) as server:
        try:
            await wait_listening(port)
            backend = [Backend("bench_IN_0", "127.0.0.1", port)]
            async with balancers(backend) as ports:
                ports = {"direct": port, **ports}
                for target in ports.values():  # warm-up, not counted
                    await measure(target, args, seconds=1)
                # Interleaved rounds, so a noisy moment on the machine hits every path.
                for n in range(args.rounds):
                    for path, target in rotated(ports, n):
                        before = time.process_time()
                        rps = await measure(target, args)
                        runs[path].append(rps)
                        cpu[path].append((time.process_time() - before) / (rps * args.seconds))
        finally:
            server.kill()
    med = {path: statistics.median(values) for path, values in runs.items() if values}
    ratio_of = paired_ratios(runs)

    def line(label: str, path: str, extra: str = "") -> None:
        spread = f"{min(runs[path]):,.0f}-{max(runs[path]):,.0f}"
        us = statistics.median(cpu[path]) * 1e6
        print(f"  {label:<40}{med[path]:>9,.0f}{ratio_of[path]:>9.2f}x  {spread:>15}{us:>9.1f}{extra}")

    print(f"\nsite: {kind}; median of {args.rounds} interleaved runs of {args.seconds}s each")
    print("  (vs direct: the median of each round's ratio to the direct run of the same round)")
    print(f"  {'path':<40}{'req/s':>9}{'vs direct':>10}  {'range':>15}{'LB us/req':>10}")
    line("direct (the baseline)", "direct")
    if "kernel" in med:
        line("load balancer, kernel path (nft DNAT)", "kernel")
    line("load balancer, user space, plain pump", "plain")
    ratio = med["capable"] / med["plain"]
    line("load balancer, user space, toxic-capable", "capable", f"  ({ratio:.2f}x the plain pump)")


# --- bulk transfer ------------------------------------------------------------------


def serve_bulk(port: int, mib: int) -> None:
    """Send ``mib`` MiB down each connection accepted on 127.0.0.1:port, then close it."""
    chunk = memoryview(b"x" * (1 << 20))
    with socket.create_server(("127.0.0.1", port)) as listener:
        while True:
            conn, _ = listener.accept()
            with conn, contextlib.suppress(OSError):  # e.g. wait_listening's probe leaving
                for _ in range(mib):
                    conn.sendall(chunk)


def bulk_client(port: int) -> None:
    """Read one connection from 127.0.0.1:port to its end; print bytes, seconds, CPU seconds."""
    buffer = bytearray(1 << 20)
    total = 0
    begin = time.perf_counter()
    cpu = time.process_time()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        while n := sock.recv_into(buffer):
            total += n
    seconds = time.perf_counter() - begin
    print(json.dumps({"bytes": total, "seconds": seconds, "cpu": time.process_time() - cpu}))


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_bulk(args: argparse.Namespace) -> None:
    """One connection carrying ``--bulk-mib`` MiB through each path, interleaved."""
    port = free_port()
    cmd = [sys.executable, __file__, "--serve-bulk", str(port), str(args.bulk_mib)]
    runs: dict[str, list[float]] = {p: [] for p in PATHS}
    # CPU seconds per GiB of the sender, the receiver and this process (the balancers'),
    # kernel work included: steadier than MiB/s when other programs load the machine.
    cpu: dict[str, list[float]] = {p: [] for p in PATHS}
    async with await anyio.open_process(cmd) as server:
        try:
            await wait_listening(port)
            async with balancers([Backend("bulk_IN_0", "127.0.0.1", port)]) as ports:
                ports = {"direct": port, **ports}
                for n in range(args.rounds):
                    for path, target in rotated(ports, n):
                        client = [sys.executable, __file__, "--bulk-client", str(target)]
                        before = cpu_of(server.pid) + time.process_time()
                        result = json.loads((await anyio.run_process(client)).stdout)
                        used = cpu_of(server.pid) + time.process_time() - before + result["cpu"]
                        cpu[path].append(used / (args.bulk_mib / 1024))
                        if result["bytes"] != args.bulk_mib << 20:
                            raise SystemExit(
                                f"{path}: {result['bytes']} bytes arrived, not {args.bulk_mib} MiB"
                            )
                        runs[path].append(result["bytes"] / result["seconds"] / 2**20)
        finally:
            server.kill()
    med = {path: statistics.median(values) for path, values in runs.items() if values}
    ratio_of = paired_ratios(runs)
    print(f"\nbulk: {args.bulk_mib} MiB through one connection; median of {args.rounds} interleaved runs")
    print(f"  {'path':<40}{'MiB/s':>9}{'vs direct':>10}  {'range':>15}{'CPU s/GiB':>10}{'vs direct':>10}")
    cpu_ratio = paired_ratios(cpu)
    for path, label in LABELS.items():
        if path in med:
            spread = f"{min(runs[path]):,.0f}-{max(runs[path]):,.0f}"
            used = statistics.median(cpu[path])
            print(
                f"  {label:<40}{med[path]:>9,.0f}{ratio_of[path]:>9.2f}x  {spread:>15}"
                f"{used:>10.2f}{cpu_ratio[path]:>9.2f}x"
            )


def rotated(ports: dict[str, int], n: int) -> list[tuple[str, int]]:
    """The paths of round ``n``, each round starting one further, so none always follows another."""
    items = list(ports.items())
    k = n % len(items)
    return items[k:] + items[:k]


def paired_ratios(runs: dict[str, list[float]]) -> dict[str, float]:
    """Per path, the median over rounds of its figure over the direct one of the same round:
    steadier than a ratio of medians when other programs load the machine."""
    direct = runs["direct"]
    return {
        path: statistics.median(v / d for v, d in zip(values, direct, strict=True))
        for path, values in runs.items()
        if values
    }


PATHS = ["direct", "kernel", "plain", "capable"]
LABELS = {
    "direct": "direct (the baseline)",
    "kernel": "load balancer, kernel path (nft DNAT)",
    "plain": "load balancer, user space, plain pump",
    "capable": "load balancer, user space, toxic-capable",
}


@asynccontextmanager
async def balancers(backend: list[Backend]) -> AsyncIterator[dict[str, int]]:
    """The kernel path (when root with nft) and both user-space pumps over ``backend``."""
    spec = EndpointSpec("bench", "http", 0)
    async with (
        open_load_balancer(spec, backend, kernel=True) as kernel,
        open_load_balancer(spec, backend, toxics=False, kernel=False) as plain,
        open_load_balancer(spec, backend, toxics=True, kernel=False) as capable,
    ):
        ports = {"plain": plain.address[1], "capable": capable.address[1]}
        if kernel.kernel():
            ports = {"kernel": kernel.address[1], **ports}
        else:
            print("  (no kernel path: it needs root and nft, Debian package nftables)")
        yield ports


async def main(args: argparse.Namespace) -> None:
    tool = shutil.which("wrk") or "own epoll client (apt-get install wrk for a stronger load)"
    print(f"load: {tool}, {args.connections} keep-alive connections")
    kinds = {"both": ["hypercorn", "raw"], "none": []}.get(args.server, [args.server])
    for kind in kinds:
        await bench_server(kind, args)
    if args.bulk_mib:
        await bench_bulk(args)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server", choices=["hypercorn", "raw", "both", "none"], default="both")
    parser.add_argument("--bulk-mib", type=int, default=1024, help="0 skips the bulk transfer")
    parser.add_argument("--serve-bulk", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bulk-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-hypercorn", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-raw", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=3, type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hypercorn:
        serve_hypercorn(args.serve_hypercorn)
    elif args.serve_bulk:
        serve_bulk(*args.serve_bulk)
    elif args.bulk_client:
        bulk_client(args.bulk_client)
    elif args.serve_raw:
        serve_raw(args.serve_raw)
    elif args.load:
        port, connections, seconds = args.load
        load(int(port), int(connections), seconds, warmup=0.5)
    else:
        anyio.run(main, args, backend="trio")


if __name__ == "__main__":
    cli()
