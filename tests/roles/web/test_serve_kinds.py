"""ASGI, WSGI and static sites served in-process by serve_sites over a real socket."""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest

from roles.hosts._web import SiteLoadError, WebSpecError, serve_sites


async def test_asgi_site_is_served_with_its_lifespan_state(web, listener, tmp_path: Path) -> None:
    spec = web.one_site(web.asgi_site(tmp_path / "sitesroot" / "0", "alpha"), listener)
    async with web.serving(spec) as binds, web.client(binds["HttpIn"]) as http:
        response = await http.get("/hello/world")
    assert response.status_code == 200
    assert response.json() == {
        "site": "alpha",
        "path": "/hello/world",
        "root_path": "",
        "state": "started",
    }


async def test_wsgi_site_runs_in_a_worker_thread(web, listener, tmp_path: Path) -> None:
    spec = web.one_site(web.wsgi_site(tmp_path / "sitesroot" / "0"), listener)
    async with web.serving(spec) as binds, web.client(binds["HttpIn"]) as http:
        response = await http.get("/a/b", params={"x": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain"
    assert response.text == "|/a/b|x=1|True"


async def test_failing_application_gives_500_and_keeps_serving(web, listener, tmp_path: Path) -> None:
    spec = web.one_site(web.asgi_site(tmp_path / "site", "alpha"), listener)
    async with web.serving(spec) as binds, web.client(binds["HttpIn"]) as http:
        failed = await http.get("/boom")
        after = await http.get("/fine")
    assert failed.status_code == 500
    assert after.status_code == 200


async def test_site_folder_that_fails_to_import_names_the_file(web, listener, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "asgi.py").write_text("raise ImportError('no such framework')\n")
    with pytest.raises(SiteLoadError, match=r"broken/asgi\.py failed: ImportError"):
        await serve_sites(web.one_site(folder, listener))


async def test_site_bound_to_an_endpoint_without_socket_is_refused(web, listener, tmp_path: Path) -> None:
    spec = web.one_site(web.static_site(tmp_path / "site"), listener, endpoints={"Other": 99})
    with pytest.raises(WebSpecError, match="binds endpoint 'HttpIn'"):
        await serve_sites(spec)


async def test_fd_that_is_not_listening_is_refused(web, tmp_path: Path) -> None:
    with socket.socket() as sock:
        spec = web.one_site(web.static_site(tmp_path / "site"), sock)
        with pytest.raises(WebSpecError, match="not a listening TCP socket"):
            await serve_sites(spec)


async def test_shutdown_lets_the_request_in_flight_finish(web, listener, tmp_path: Path) -> None:
    spec = web.one_site(web.asgi_site(tmp_path / "site", "alpha"), listener)
    stop = anyio.Event()
    async with anyio.create_task_group() as tasks:
        binds = await tasks.start(partial(serve_sites, spec, shutdown_event=stop))
        async with web.client(binds["HttpIn"]) as http, http.stream("GET", "/slow?0.5") as response:
            chunks = response.aiter_bytes()
            assert await anext(chunks) == b"started "
            stop.set()  # the response is half sent: shutdown must wait for the rest
            rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"finished"
    assert [row["sc-status"] for row in web.log_rows()] == ["200"]


async def test_shutdown_does_not_wait_longer_than_the_grace_period(web, listener, tmp_path: Path) -> None:
    spec = web.one_site(web.asgi_site(tmp_path / "site", "alpha"), listener, graceful_timeout=0.3)
    stop = anyio.Event()
    with anyio.fail_after(5):  # the request alone would take 30 s
        async with anyio.create_task_group() as tasks:
            binds = await tasks.start(partial(serve_sites, spec, shutdown_event=stop))
            async with web.client(binds["HttpIn"]) as http, http.stream("GET", "/slow?30") as response:
                chunks = response.aiter_bytes()
                assert await anext(chunks) == b"started "
                stop.set()
                with pytest.raises(httpx.RemoteProtocolError):  # cut off mid-body
                    async for _ in chunks:
                        pass


async def test_idle_timeout_ends_serving(web, listener, tmp_path: Path) -> None:
    spec = web.one_site(web.static_site(tmp_path / "site"), listener, idle_timeout=0.3)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            binds = await tasks.start(partial(serve_sites, spec))
            async with web.client(binds["HttpIn"]) as http:
                assert (await http.get("/")).status_code == 200
        # serve_sites returned by itself: nothing set a shutdown event.


@pytest.mark.anyio  # on trio and on asyncio (the anyio_backend fixture, tests/conftest.py)
async def test_serves_on_every_backend(web, listener, tmp_path: Path) -> None:
    spec = web.one_site(web.wsgi_site(tmp_path / "site"), listener)
    async with web.serving(spec) as binds, web.client(binds["HttpIn"]) as http:
        assert (await http.get("/x")).text == "|/x||True"
