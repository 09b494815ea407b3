"""WaWebHost (HWC) and the W3WP WebWorker as real processes serving HTTP on inherited sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from actors import ProcessOptions
from roles.protocol import (
    Change,
    EnvironmentChanged,
    RoleHostConfig,
    SiteBinding,
    SiteInfo,
    StatusCheck,
    StatusCheckResult,
)
from tests.roles.role_parent import FIXTURES, environment, marks, run_host, worker_config
from tests.roles.test_worker_host import assert_role_failed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 at a free port, as the bootstrapper holds one."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def web_config(
    kind: str, site: str, sock: socket.socket, tmp_path: Path, **changes: object
) -> RoleHostConfig:
    """A config serving fixture site ``site`` as site "Web" on endpoint HttpIn (``sock``)."""
    config = worker_config("web_entry", tmp_path, kind=kind)
    return RoleHostConfig(
        kind=config.kind,
        app_root=config.app_root,
        environment=config.environment,
        on_stop_timeout=3.0,
        graceful_timeout=1.0,
        sites=[
            SiteInfo(
                name="Web",
                index=0,
                physical_path=str(FIXTURES / "sites" / site),
                bindings=[SiteBinding(name="http", endpoint_name="HttpIn")],
            )
        ],
        listen_fds={"HttpIn": sock.fileno()},
        web_log_dir=str(tmp_path / "LogFiles" / "W3SVC1"),
        **changes,  # type: ignore[arg-type]
    )


def options(sock: socket.socket) -> ProcessOptions:
    return ProcessOptions(pass_fds=(sock.fileno(),), stop_timeout=6.0, term_timeout=1.0)


def client(sock: socket.socket) -> httpx.AsyncClient:
    port = sock.getsockname()[1]
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10)


async def poll(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def w3c_stems(tmp_path: Path) -> list[str]:
    """The cs-uri-stem of every request in the W3C access log."""
    stems = []
    for path in sorted((tmp_path / "LogFiles" / "W3SVC1").glob("u_ex*.log")):
        fields: list[str] = []
        for line in path.read_text().splitlines():
            if line.startswith("#Fields: "):
                fields = line.split(" ")[1:]
            elif not line.startswith("#"):
                stems.append(dict(zip(fields, line.split(" "), strict=True))["cs-uri-stem"])
    return stems


async def test_hwc_serves_a_wsgi_site_beside_the_entry_point(listener: socket.socket, tmp_path: Path) -> None:
    log = tmp_path / "WaWebHost.log"
    config = web_config("hwc", "wsgi", listener, tmp_path, log_path=str(log))
    async with run_host(config, options=options(listener)) as host:
        await host.recorder.wait_for("ready")
        async with client(listener) as http:
            response = await http.get("/hello")
        assert response.status_code == 200
        assert response.text == "/hello from WorkerRole_IN_0"
        await poll(lambda: "warm-up request answered: HTTP/1.1 200" in log.read_text())
        assert await host.ref.stop() is None
    assert host.recorder.phases == ["starting", "ready", "stopping"]
    assert marks(tmp_path) == ["on_start", "on_stop"]
    assert sorted(w3c_stems(tmp_path)) == ["/do.rd_runtime_init", "/hello"]
    assert "WaWebHost INFO serving HttpIn on http://127.0.0.1:" in log.read_text()


async def test_hwc_with_a_site_that_cannot_load_fails(listener: socket.socket, tmp_path: Path) -> None:
    config = web_config("hwc", "no_such_site", listener, tmp_path)
    async with run_host(config, options=options(listener)) as host:
        reason = await host.exit_reason()
    assert_role_failed(reason)
    assert host.recorder.phases == ["starting", "failed"]
    assert "no_such_site does not exist" in host.recorder.states[-1].detail
    assert marks(tmp_path) == ["on_start"]


async def test_w3wp_serves_an_asgi_site_and_raises_events_in_its_process(
    listener: socket.socket, tmp_path: Path
) -> None:
    config = web_config("w3wp", "asgi", listener, tmp_path)
    async with run_host(config, options=options(listener)) as host, client(listener) as http:
        await host.recorder.wait_for("ready")
        assert (await http.get("/")).text == "hello"
        assert await host.ref.ask(StatusCheck()) == StatusCheckResult(busy=False)
        await http.get("/busy")  # the site's status_check handler now calls set_busy()
        assert await host.ref.ask(StatusCheck()) == StatusCheckResult(busy=True)
        new = environment({**config.environment.settings, "Greeting": "bonjour"})
        await host.ref.tell(
            EnvironmentChanged(environment=new, changes=[Change(kind="setting", name="Greeting")])
        )
        await host.ref.ask(StatusCheck())  # handled after the tell
        assert (await http.get("/")).text == "bonjour|busy|changed:Greeting"
        assert await host.ref.stop() is None
    assert host.recorder.phases == ["starting", "ready", "stopping"]
    assert marks(tmp_path) == []  # W3WP runs no entry point


async def test_w3wp_exits_by_itself_after_its_idle_timeout(listener: socket.socket, tmp_path: Path) -> None:
    config = web_config("w3wp", "asgi", listener, tmp_path, idle_timeout=0.3)
    async with run_host(config, options=options(listener)) as host:
        async with client(listener) as http:
            assert (await http.get("/")).text == "hello"
        assert await host.exit_reason() is None
    assert host.recorder.phases == ["starting", "ready", "stopping"]
    assert host.recorder.states[-1].detail == "no request for 0.3 s"
    assert w3c_stems(tmp_path) == ["/"]
