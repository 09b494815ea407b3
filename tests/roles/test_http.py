"""serve_http, the one way reddog serves HTTP: readiness, a graceful stop however it is asked for,
and a deadline on that stop; each test on trio and on asyncio."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import httpx
import pytest

from roles.hosts import http
from roles.hosts.http import answer_lifespan, asgi_handler, serve_http, server_config

pytestmark = pytest.mark.anyio  # the anyio_backend fixture (tests/conftest.py) runs each on both


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers "started " at once and "finished" a moment later; "/" answers "ok"."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/":
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await send({"type": "http.response.body", "body": b"started ", "more_body": True})
    await anyio.sleep(0.5)
    await send({"type": "http.response.body", "body": b"finished"})


async def stuck_on_shutdown(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Starts, and never answers the lifespan shutdown."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await anyio.sleep_forever()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def listening() -> AsyncIterator[socket.socket]:
    """A listening socket on loopback, closed after the block."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


async def test_reports_its_url_once_serving() -> None:
    async with listening() as sock, anyio.create_task_group() as tg:
        stop = anyio.Event()
        config = server_config(graceful_timeout=1.0)
        url = await tg.start(
            partial(serve_http, asgi_handler(slow_app), sock, config, shutdown_trigger=stop.wait)
        )
        assert url == f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(trust_env=False) as client:
            answer = await client.get(url + "/")
        assert (answer.status_code, answer.text) == (200, "ok")
        assert "server" not in answer.headers  # no Server header of hypercorn's
        stop.set()


async def test_cancelling_the_server_lets_a_request_in_flight_finish() -> None:
    """Cancellation is a graceful stop as well: hypercorn's asyncio server would break if
    cancelled, and a request in flight gets graceful_timeout seconds on either backend."""
    async with listening() as sock, anyio.create_task_group() as tg:
        server = anyio.CancelScope()
        stopped = anyio.Event()

        async def serve(*, task_status: anyio.abc.TaskStatus[str]) -> None:
            with server:
                await serve_http(
                    asgi_handler(slow_app), sock, server_config(graceful_timeout=5.0), task_status=task_status
                )
            stopped.set()

        await tg.start(serve)
        with anyio.fail_after(10):
            async with await anyio.connect_tcp(*sock.getsockname()[:2]) as stream:
                await stream.send(b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                received = b""
                while b"started" not in received:
                    received += await stream.receive()
                server.cancel()
                async for chunk in stream:
                    received += chunk
            assert b"finished" in received
            await stopped.wait()


async def test_a_stop_stuck_in_the_lifespan_is_cut_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """hypercorn would wait shutdown_timeout (60 s) for the lifespan; the stop's own deadline
    is graceful_timeout + CLOSE_GRACE."""
    monkeypatch.setattr(http, "CLOSE_GRACE", 0.5)
    config = server_config(graceful_timeout=0.1)
    assert config.shutdown_timeout >= 60
    async with listening() as sock:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(partial(serve_http, asgi_handler(stuck_on_shutdown), sock, config))
                started = anyio.current_time()
                tg.cancel_scope.cancel()
        assert anyio.current_time() - started < 5
    assert any(
        "did not stop within 0.6 s" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )


async def test_a_client_that_never_finishes_its_tls_handshake_is_cut_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from fabric.frontend.api_tls import server_context

    monkeypatch.setattr(http, "TLS_HANDSHAKE_SECONDS", 0.5)  # 10 s in use
    context = await anyio.to_thread.run_sync(server_context, tmp_path, "127.0.0.1")
    async with listening() as sock, anyio.create_task_group() as tg:
        stop = anyio.Event()
        config = server_config(graceful_timeout=1.0)
        serve = partial(serve_http, ssl_context=context, shutdown_trigger=stop.wait)
        await tg.start(serve, asgi_handler(slow_app), sock, config)
        async with await anyio.connect_tcp("127.0.0.1", sock.getsockname()[1]) as plain:
            # says nothing (a TLS client would send its hello)
            with anyio.fail_after(20):  # hypercorn's own default held it 60 s
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError)):
                    while True:
                        await plain.receive()
        stop.set()
