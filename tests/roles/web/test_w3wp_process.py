"""W3WP as a real child process serving over a listening socket it inherited."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import PIPE

import anyio
import anyio.abc
import pytest

from roles.hosts._web import dump_web_spec

pytestmark = pytest.mark.slow


@asynccontextmanager
async def w3wp(args: Sequence[str], fds: Sequence[int]) -> AsyncIterator[anyio.abc.Process]:
    """Run `python -m roles.hosts.w3wp ARGS`; kill it on the way out if it still runs."""
    command = [sys.executable, "-m", "roles.hosts.w3wp", *args]
    process = await anyio.open_process(command, pass_fds=fds, stderr=PIPE)
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()


async def read_all(stream: anyio.abc.ByteReceiveStream | None) -> str:
    assert stream is not None
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
    return b"".join(chunks).decode()


async def test_worker_serves_over_an_inherited_fd_and_stops_on_sigterm(web, listener, tmp_path: Path) -> None:
    spec_file = tmp_path / "web.json"
    spec = web.one_site(web.wsgi_site(tmp_path / "sitesroot" / "0"), listener, endpoints={})
    spec_file.write_bytes(dump_web_spec(spec))
    fd = listener.fileno()
    port = listener.getsockname()[1]
    with anyio.fail_after(20):
        async with w3wp(["--spec", str(spec_file), "--fd", f"HttpIn={fd}"], [fd]) as process:
            # No waiting for readiness: the socket already listens, so the request queues.
            async with web.client(f"http://127.0.0.1:{port}") as http:
                response = await http.get("/hello")
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            stderr = await read_all(process.stderr)
    assert response.text == "|/hello||True"
    assert "SIGTERM: shutting down" in stderr
    rows = web.log_rows()
    assert [(r["cs-uri-stem"], r["sc-status"]) for r in rows] == [("/hello", "200")]


async def test_worker_exits_by_itself_after_idle_timeout(web, listener, tmp_path: Path) -> None:
    spec_file = tmp_path / "web.json"
    spec = web.one_site(web.static_site(tmp_path / "site"), listener, idle_timeout=0.5)
    spec_file.write_bytes(dump_web_spec(spec))
    fd = listener.fileno()
    with anyio.fail_after(20):
        async with w3wp(["--spec", str(spec_file)], [fd]) as process:
            async with web.client(f"http://127.0.0.1:{listener.getsockname()[1]}") as http:
                assert (await http.get("/")).status_code == 200
            assert await process.wait() == 0
    assert [r["sc-status"] for r in web.log_rows()] == ["200"]


async def test_site_that_fails_to_import_exits_2_naming_the_file(web, listener, tmp_path: Path) -> None:
    folder = tmp_path / "sitesroot" / "0"
    folder.mkdir(parents=True)
    (folder / "asgi.py").write_text("import no_such_framework\n")
    spec_file = tmp_path / "web.json"
    spec_file.write_bytes(dump_web_spec(web.one_site(folder, listener)))
    with anyio.fail_after(20):
        async with w3wp(["--spec", str(spec_file)], [listener.fileno()]) as process:
            stderr = await read_all(process.stderr)
            assert await process.wait() == 2
    assert f"w3wp: error: importing {folder / 'asgi.py'} failed: ModuleNotFoundError" in stderr
    assert "Traceback" in stderr  # the site author sees where their code failed


async def test_bad_spec_file_exits_2(tmp_path: Path) -> None:
    spec_file = tmp_path / "web.json"
    spec_file.write_text('{"sites": []}')
    with anyio.fail_after(20):
        async with w3wp(["--spec", str(spec_file)], []) as process:
            stderr = await read_all(process.stderr)
            assert await process.wait() == 2
    assert f"w3wp: error: web spec {spec_file} is invalid" in stderr
