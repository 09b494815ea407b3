"""SiteActivator with real W3WP processes: start on demand, replace, idle stop, clean exit."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.abc
import psutil
import pytest

from fabric.guest.web_activation import SiteActivator, WorkerRapidFailError, listen_tcp
from roles.hosts._web import BindingSpec, SiteSpec, dump_web_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def worker_starter(spec_file: Path, started: list[anyio.abc.Process]):
    """Return a start_worker callback running W3WP with the activator's fds."""

    async def start_worker(fds: Mapping[str, int]) -> anyio.abc.Process:
        args = [f"--fd={name}={fd}" for name, fd in fds.items()]
        command = [sys.executable, "-m", "roles.hosts.w3wp", "--spec", str(spec_file), *args]
        process = await anyio.open_process(command, pass_fds=list(fds.values()), stderr=None)
        started.append(process)
        return process

    return start_worker


async def wait_for(activator: SiteActivator, predicate) -> None:
    with anyio.fail_after(15):
        while not predicate():
            await activator.wait_changed()


@pytest.fixture
def sockets():
    web_sock, admin_sock = listen_tcp("127.0.0.1", 0), listen_tcp("127.0.0.1", 0)
    with web_sock, admin_sock:
        yield {"HttpIn": web_sock, "Admin": admin_sock}


def write_spec(web, tmp_path: Path, sockets, idle_timeout: float | None = None) -> Path:
    folder = web.asgi_site(tmp_path / "sitesroot" / "0", "alpha")
    bindings = (BindingSpec("HttpIn"), BindingSpec("Admin"))
    site = SiteSpec("Web", 0, str(folder), bindings)
    spec = web.spec([site], {}, idle_timeout=idle_timeout)
    spec_file = tmp_path / "web.json"
    spec_file.write_bytes(dump_web_spec(spec))
    return spec_file


def url(sock) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_first_request_starts_the_worker_and_a_killed_one_is_replaced(
    web, tmp_path: Path, sockets
) -> None:
    started: list[anyio.abc.Process] = []
    activator = SiteActivator(sockets, worker_starter(write_spec(web, tmp_path, sockets), started))
    async with anyio.create_task_group() as tasks:
        await tasks.start(activator.run)
        with anyio.move_on_after(0.2) as quiet:  # no request yet: no worker may start
            await activator.wait_changed()
        assert quiet.cancelled_caught
        assert (activator.starts, activator.worker, children()) == (0, None, [])

        async with web.client(url(sockets["Admin"])) as http:
            first = await http.get("/one")
        assert first.json()["path"] == "/one"
        assert activator.starts == 1
        assert [p.pid for p in children()] == [started[0].pid]

        os.kill(started[0].pid, signal.SIGKILL)
        await wait_for(activator, lambda: activator.worker is None)
        assert activator.exit_codes == [-signal.SIGKILL]
        assert children() == []

        async with web.client(url(sockets["HttpIn"])) as http:
            second = await http.get("/two")
        assert second.json()["path"] == "/two"
        assert activator.starts == 2
        assert started[1].pid != started[0].pid
        tasks.cancel_scope.cancel()
    # Cancelling the activator stopped the worker politely (SIGTERM, exit 0) and waited for it.
    assert started[1].returncode == 0
    assert children() == []


async def test_idle_worker_exits_and_the_next_request_starts_another(web, tmp_path: Path, sockets) -> None:
    started: list[anyio.abc.Process] = []
    spec_file = write_spec(web, tmp_path, sockets, idle_timeout=0.5)
    activator = SiteActivator(sockets, worker_starter(spec_file, started))
    async with anyio.create_task_group() as tasks:
        await tasks.start(activator.run)
        async with web.client(url(sockets["HttpIn"])) as http:
            assert (await http.get("/")).status_code == 200
        await wait_for(activator, lambda: activator.worker is None)
        assert activator.exit_codes == [0]
        assert children() == []

        async with web.client(url(sockets["HttpIn"])) as http:
            assert (await http.get("/again")).status_code == 200
        assert activator.starts == 2
        tasks.cancel_scope.cancel()
    assert children() == []
    rows = web.log_rows()
    assert [r["cs-uri-stem"] for r in rows] == ["/", "/again"]


async def test_worker_that_keeps_failing_stops_the_activator(tmp_path: Path, sockets) -> None:
    broken = tmp_path / "web.json"
    broken.write_text("{}")
    started: list[anyio.abc.Process] = []
    activator = SiteActivator(sockets, worker_starter(broken, started), rapid_fail_limit=3)
    async with await anyio.connect_tcp("127.0.0.1", sockets["HttpIn"].getsockname()[1]):
        with anyio.fail_after(30), pytest.raises(WorkerRapidFailError, match="failed 3 times"):
            await activator.run()
    assert activator.exit_codes == [2, 2, 2]
    assert children() == []


async def test_worker_ignoring_sigterm_is_killed_when_the_activator_stops(sockets) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    started: list[anyio.abc.Process] = []

    async def start_worker(fds: Mapping[str, int]) -> anyio.abc.Process:
        process = await anyio.open_process([sys.executable, "-c", stubborn], stderr=None)
        started.append(process)
        assert process.stdout is not None
        output = b""
        while not output.endswith(b"ready\n"):  # SIGTERM is ignored from then on
            output += await process.stdout.receive()
        return process

    activator = SiteActivator(sockets, start_worker, stop_timeout=0.5)
    async with await anyio.connect_tcp("127.0.0.1", sockets["HttpIn"].getsockname()[1]):
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tasks:
                await tasks.start(activator.run)
                await wait_for(activator, lambda: activator.worker is not None)
                tasks.cancel_scope.cancel()
    assert started[0].returncode == -signal.SIGKILL
    assert children() == []
