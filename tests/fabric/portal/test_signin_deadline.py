"""The portal's sign-in form is the one body anyone may send (before any credential): one that
does not arrive whole within its deadline is answered 408 and its connection closed, instead
of holding it for as long as the sender likes."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from fabric.frontend.rdfe import Rdfe
from fabric.portal import routes
from roles.hosts.http import asgi_handler, serve_http, server_config

pytestmark = [pytest.mark.timeout(60)]


def _answer_to_a_form_cut_short(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /portal/signin HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\ntoken="
        )
        sock.settimeout(20)  # the rest of the form never comes
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


async def test_a_sign_in_form_that_never_arrives_is_answered_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "SIGNIN_SECONDS", 1.0)
    rdfe = Rdfe(cast(Any, None), tmp_path, "the-token")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        async with anyio.create_task_group() as tg:
            await tg.start(serve_http, asgi_handler(rdfe), sock, server_config(graceful_timeout=1))
            began = anyio.current_time()
            answer = await anyio.to_thread.run_sync(_answer_to_a_form_cut_short, sock.getsockname()[1])
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"the sign-in form did not arrive within 1 s" in answer
            assert anyio.current_time() - began < 15
            tg.cancel_scope.cancel()
