"""The HWC web role, tested in this process (its entry point and its WSGI app) and on a real
fabric behind the load balancer. Run with ``python -m pytest examples/hwc-wsgi``."""

from __future__ import annotations

import importlib
import wsgiref.util
from pathlib import Path

import httpx
import pytest

SERVICE = Path(__file__).resolve().parents[1]


async def test_the_site_answers_with_the_configured_message(role_harness) -> None:
    async with role_harness.from_service(SERVICE, "Hello", index=1) as role:
        assert await role.start()  # a plain-def on_start: it ran in a worker thread
        wsgi = importlib.import_module("wsgi")  # the role's folder is first on sys.path meanwhile
        environ: dict[str, object] = {}
        wsgiref.util.setup_testing_defaults(environ)
        statuses: list[str] = []
        body = b"".join(wsgi.application(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["200 OK"]
    assert body == b"Hello from a WSGI app in WaWebHost (Hello_IN_1)\n"


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_on_the_fabric_the_load_balancer_reaches_both_instances(fabric_service) -> None:
    async with fabric_service(SERVICE) as service:
        served = set()
        for _ in range(40):  # a fresh connection each: the load balancer spreads them
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(service.url("Hello", "HttpIn"))
            assert response.status_code == 200
            assert response.text.startswith("Hello from a WSGI app in WaWebHost (")
            served.add(response.text.rsplit("(", 1)[1].strip(")\n"))
            if len(served) == 2:
                break
        assert served == {"Hello_IN_0", "Hello_IN_1"}
