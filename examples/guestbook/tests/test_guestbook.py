"""The guestbook, tested two ways: each role in this process (the store, the web role and its
site), and the whole service deployed on a real fabric, with a chaos fault.
Run with ``python -m pytest examples/guestbook``."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import anyio
import httpx
import pytest

from fabric.controller.chaos.messages import Inject, Kill, Target
from roles import RoleEnvironment

SERVICE = Path(__file__).resolve().parents[1]


async def ask_store(command: str) -> list[str]:
    """One line to the store on RoleEnvironment's Store endpoint; its answer (retried until it
    listens: run opens the listener just after start)."""
    endpoint = RoleEnvironment.current_instance.instance_endpoints["Store"]
    with anyio.fail_after(10):
        while True:
            try:
                connection = await anyio.connect_tcp(endpoint.host, endpoint.port)
            except OSError:
                await anyio.sleep(0.01)
                continue
            async with connection:
                await connection.send(command.encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    data += await connection.receive()
                return list(json.loads(data))


async def test_the_store_keeps_the_last_max_entries(role_harness) -> None:
    settings = {"MaxEntries": "2"}
    async with role_harness(
        SERVICE / "Worker", role="Worker", settings=settings, endpoints={"Store": "tcp"}
    ) as role:
        assert await role.start()
        assert await ask_store("LIST") == []
        for text in ("one", "two", "three"):
            await ask_store("ADD " + json.dumps(text))
        assert await ask_store("LIST") == ["two", "three"]
        assert await role.stop()


async def test_the_site_shows_its_title_and_instance(role_harness) -> None:
    # The Web role from the service's csdef and cscfg; its site is an ASGI app we call directly.
    async with role_harness.from_service(SERVICE, "Web") as role:
        assert await role.start()
        asgi = importlib.import_module("asgi")  # the role's folder is first on sys.path meanwhile
        transport = httpx.ASGITransport(app=asgi.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://guestbook") as client:
            page = await client.get("/")
            health = await client.get("/health")
    assert page.status_code == 200
    assert "<h1>reddog guestbook</h1>" in page.text  # the Title setting of the .cscfg
    assert "served by Web_IN_0" in page.text
    assert health.text == "ok"


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_on_the_fabric_entries_survive_a_killed_store(fabric_service) -> None:
    async with fabric_service(SERVICE) as service:
        assert sorted(i.id for i in await service.instances()) == [
            "Web_IN_0",
            "Web_IN_1",
            "Worker_IN_0",
            "Worker_IN_1",
        ]
        url = service.url("Web", "HttpIn")
        async with httpx.AsyncClient(timeout=10) as client:
            signed = await client.post(url + "sign", data={"entry": "hello from a test"})
            assert signed.status_code == 303
            # Every worker keeps the entries; the site reads the first that answers.
            kill = Kill(target=Target(place="role-host", instance="Worker_IN_1"))
            await service.chaos.inject(Inject(fault=kill))
            with anyio.fail_after(60):
                while True:
                    worker = next(i for i in await service.instances() if i.id == "Worker_IN_1")
                    if worker.restarts >= 1 and worker.status == "ReadyRole":
                        break
                    await anyio.sleep(0.1)
            page = await client.get(url)
        assert "<li>hello from a test</li>" in page.text
