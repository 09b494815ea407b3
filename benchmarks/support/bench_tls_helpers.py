"""The far node of benchmarks/tls_link.py, run as a child process:

    python bench_tls_helpers.py CERT KEY CA BACKEND

It registers a Sink as "sink" and listens for actor links, and serves the raw baselines on
two more TLS ports of its own: an echo (served on the actor system's loop, waiting with the
backend's own calls, as the link does) and a reader of length-prefixed Items (a blocking
thread, a connection per round). It prints the three ports, then runs until its standard input
closes.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading

import anyio
import anyio.to_thread
from bench_actors_helpers import Sink, read_items

from actors import LinkOptions, ServerTLS, open_system
from actors._loopcalls import loop_calls


async def tls_echo(listener: socket.socket, context: ssl.SSLContext) -> None:
    """Serve a TLS echo on each connection."""
    listener.setblocking(False)
    async with anyio.create_task_group() as task_group:
        while True:
            await anyio.wait_readable(listener)
            raw, _ = listener.accept()
            task_group.start_soon(echo_one, raw, context)


async def echo_one(raw: socket.socket, context: ssl.SSLContext) -> None:
    """Echo whatever arrives on one TLS connection: non-blocking ssl calls, waiting only when
    they would block (the raw baseline of an ask's round trip)."""
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
    conn.setblocking(False)
    while True:
        try:
            conn.do_handshake()
            break
        except ssl.SSLWantReadError:
            await anyio.wait_readable(conn)
        except ssl.SSLWantWriteError:
            await anyio.wait_writable(conn)
    wait_readable = loop_calls().wait_readable  # the backend's own, as the link uses
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except ssl.SSLWantReadError:
                await wait_readable(conn.fileno())
                continue
            except OSError:
                return
            if not data:
                return
            conn.send(data)


def tls_reader(listener: socket.socket, context: ssl.SSLContext) -> None:
    """Read counted Items off each TLS connection in turn, in a thread (the raw baseline of
    tells: one connection per round)."""
    while True:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            expected = int.from_bytes(conn.recv(8), "big")
            read_items(conn, expected)


def port_on_loopback() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


async def main(cert: str, key: str, ca: str) -> None:
    tls = ServerTLS(cert, key, ca)
    context = tls.context()
    async with open_system() as system, anyio.create_task_group() as task_group:
        system.register("sink", await system.spawn(Sink, name="sink"))
        listener = await system.listen(
            "127.0.0.1", 0, tls=tls, name="far", options=LinkOptions(ping_interval=None)
        )
        echo, reader = port_on_loopback(), port_on_loopback()
        task_group.start_soon(tls_echo, echo, context)
        threading.Thread(target=tls_reader, args=(reader, context), daemon=True).start()
        ports = (listener.address[1], echo.getsockname()[1], reader.getsockname()[1])
        print(*ports, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        task_group.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4], backend=sys.argv[4])
