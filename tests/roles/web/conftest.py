"""Fixtures for the web serving tests: site folders, listening sockets, an in-process server."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from roles.hosts._web import BindingSpec, SiteSpec, WebSpec, serve_sites

ASGI_APP = """
import json

import helper  # a module beside asgi.py: the site folder is on sys.path while importing


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "started"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"].endswith("/boom"):
        raise RuntimeError("boom")
    if scope["path"].endswith("/slow"):
        import anyio
        # Headers and a first chunk at once tell the client the request is in flight.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started ", "more_body": True})
        await anyio.sleep(float(scope["query_string"] or b"0.5"))
        await send({"type": "http.response.body", "body": b"finished"})
        return
    body = json.dumps({
        "site": helper.NAME,
        "path": scope["path"],
        "root_path": scope["root_path"],
        "state": scope.get("state", {}).get("greeting"),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""

WSGI_APP = """
import threading


def application(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    in_thread = threading.current_thread() is not threading.main_thread()
    body = "|".join([environ["SCRIPT_NAME"], environ["PATH_INFO"], environ["QUERY_STRING"],
                     str(in_thread)])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
"""


class WebKit:
    """Helpers the web tests share: site folders, specs, an in-process server, log reading."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.log_dir = tmp_path / "LogFiles" / "W3SVC1"

    def asgi_site(self, folder: Path, name: str) -> Path:
        """Write an ASGI site whose JSON answer names `name`, the path, root_path and state."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "asgi.py").write_text(ASGI_APP)
        (folder / "helper.py").write_text(f"NAME = {name!r}\n")
        return folder

    def wsgi_site(self, folder: Path) -> Path:
        """Write a WSGI site answering SCRIPT_NAME|PATH_INFO|QUERY_STRING|ran-in-a-thread."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "wsgi.py").write_text(textwrap.dedent(WSGI_APP))
        return folder

    def static_site(self, folder: Path) -> Path:
        """Write a static site: index.html, a stylesheet, a sub folder, a file of unknown type."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text("<h1>home</h1>")
        (folder / "style.css").write_text("h1 { color: red }")
        (folder / "docs").mkdir(exist_ok=True)
        (folder / "docs" / "index.html").write_text("<h1>docs</h1>")
        (folder / "data.unknownext").write_bytes(b"\x00\x01")
        return folder

    def spec(self, sites: Sequence[SiteSpec], endpoints: dict[str, int], **changes: Any) -> WebSpec:
        """Return a WebSpec logging under tmp_path/LogFiles/W3SVC1, with a short grace period."""
        fields: dict[str, Any] = {"log_dir": str(self.log_dir), "graceful_timeout": 2.0}
        fields.update(changes)
        return WebSpec(tuple(sites), endpoints, **fields)

    def one_site(self, folder: Path, sock: socket.socket, **changes: Any) -> WebSpec:
        """Return a WebSpec serving `folder` as site "Web" on endpoint "HttpIn", any host."""
        site = SiteSpec("Web", 0, str(folder), (BindingSpec("HttpIn"),))
        endpoints = changes.pop("endpoints", {"HttpIn": sock.fileno()})
        return self.spec([site], endpoints, **changes)

    @asynccontextmanager
    async def serving(self, spec: WebSpec) -> AsyncIterator[dict[str, str]]:
        """Serve `spec` in-process for the body of the block; yields {endpoint: base url}."""
        stop = anyio.Event()
        async with anyio.create_task_group() as tasks:
            binds: dict[str, str] = await tasks.start(partial(serve_sites, spec, shutdown_event=stop))
            try:
                yield binds
            finally:
                stop.set()

    @asynccontextmanager
    async def client(self, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
        """An httpx client for a server on loopback (no proxies from the environment)."""
        async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=10) as http:
            yield http

    async def poll_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Check `predicate` every 20 ms until it holds; fail after `timeout` seconds."""
        with anyio.fail_after(timeout):
            while True:
                if predicate():
                    return
                await anyio.sleep(0.02)

    def log_text(self) -> str:
        """Return the text of every access log file written so far."""
        return "".join(p.read_text() for p in sorted(self.log_dir.glob("u_ex*.log")))

    def log_rows(self) -> list[dict[str, str]]:
        """Return the access log's lines, each as {field name: value}, parsed independently."""
        rows: list[dict[str, str]] = []
        fields: list[str] = []
        for line in self.log_text().splitlines():
            if line.startswith("#Fields: "):
                fields = line[len("#Fields: ") :].split(" ")
            elif not line.startswith("#"):
                values = line.split(" ")
                assert len(values) == len(fields), line
                rows.append(dict(zip(fields, values, strict=True)))
        return rows


@pytest.fixture
def web(tmp_path: Path) -> WebKit:
    """The shared web test helpers, writing under this test's tmp_path."""
    return WebKit(tmp_path)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 at a free port."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


@pytest.fixture
def listener2() -> Iterator[socket.socket]:
    """A second TCP socket listening on 127.0.0.1 at a free port."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock
