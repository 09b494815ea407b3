"""A number in a query string or header is ASCII digits: `str.isdigit()` also takes other
digits (a superscript two, Arabic-Indic digits) that `int()` refuses, and a number of thousands
of digits is past what `int()` reads. Each is a one-line 400, never a 500 and a traceback."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest

from fabric.controller.messages import ControllerError
from fabric.controller.status_page import cursor_key
from fabric.frontend.rdfe import Rdfe
from roles.hosts.http import asgi_handler, serve_http, server_config

pytestmark = [pytest.mark.timeout(60)]

ODD = ("\u00b2", "\u0661\u0662", "1" * 5000)


async def test_odd_digits_in_queries_are_a_400(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rdfe = Rdfe(cast(Any, None), tmp_path, "t")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        async with anyio.create_task_group() as tg:
            url = await tg.start(serve_http, asgi_handler(rdfe), sock, server_config(graceful_timeout=1))
            async with httpx.AsyncClient(
                base_url=url, headers={"authorization": "Bearer t"}, timeout=10
            ) as c:
                sub = (await c.get("/subscriptions")).json()["Subscriptions"][0]["SubscriptionId"]
                logs = f"/subscriptions/{sub}/services/hostedservices/x/deploymentslots/production/roleinstances/X_IN_0/logs"
                for odd in ODD:
                    for path in (
                        f"/cluster/hosts?offset={odd}",
                        f"/cluster/hosts?limit={odd}",
                        f"/events?after={odd}",
                        f"/events?limit={odd}",
                        f"/events?wait={odd}",
                        f"{logs}?offset={odd}",
                        f"{logs}?limit={odd}",
                    ):
                        answer = await c.get(path)
                        assert answer.status_code == 400, (path[:80], answer.text[:200])
            tg.cancel_scope.cancel()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_odd_digits_in_a_page_cursor_are_a_bad_request() -> None:
    for odd in ODD[:2]:
        with pytest.raises(ControllerError):
            cursor_key(f"Web_IN_{odd}")
