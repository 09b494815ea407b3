"""Hostile request bodies against a real `fabric serve`: a package over max_package_bytes is
refused (413) on its Content-Length before a byte is read, a body without one as soon as it
passes the limit, and junk under the limit is streamed to a file, not memory: the serving
process stays about the size it was."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

import anyio
import httpx
import psutil
import pytest

from tests.integration.test_e2e_cli import Output
from tests.integration.test_e2e_limits import FABRIC

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

MiB = 1024 * 1024
#: Resident memory `fabric serve` may gain over every refused upload below (generous: allocator
#: noise and the first requests' imports). Holding them took over 250 MiB before.
MAX_GROWTH = 24 * MiB


async def raw_post(url: str, path: str, token: str, head: dict[str, str], body: bytes) -> tuple[int, float]:
    """POST ``body`` after ``head`` on a plain socket (the body may be less than the declared
    Content-Length); returns the status and the seconds it took to come."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"host: {host}", f"authorization: Bearer {token}"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    started = time.perf_counter()
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = b""
        with anyio.fail_after(30):
            while b"\r\n" not in answer:
                answer += await stream.receive()
    return int(answer.split()[1]), time.perf_counter() - started


class Served(NamedTuple):
    """A `fabric serve` running: its process, API URL, token and state folder."""

    process: psutil.Process
    url: str
    token: str
    state: Path


@asynccontextmanager
async def fabric_serve(state: Path) -> AsyncIterator[Served]:
    """A real `fabric serve --fast` on ``state``, once it serves; terminated at the end."""
    serve = [FABRIC, "serve", "--fast", "--state-dir", str(state)]
    async with await anyio.open_process(serve, stderr=subprocess.STDOUT) as fabric:
        try:
            await Output(fabric).wait_for("fabric serving")
            url = (state / "api").read_text().strip()
            token = (state / "token").read_text().strip()
            yield Served(psutil.Process(fabric.pid), url, token, state)
        finally:
            fabric.terminate()
            with anyio.fail_after(60):
                await fabric.wait()


async def test_oversized_and_junk_packages_are_refused_early_without_growth(tmp_path: Path) -> None:
    async with fabric_serve(tmp_path / "state") as fabric:
        await refused_without_growth(fabric)


async def refused_without_growth(fabric: Served) -> None:
    """Every refusal of the test, against the running ``fabric``."""
    url, token, state, served = fabric.url, fabric.token, fabric.state, fabric.process
    async with httpx.AsyncClient(
        base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        sub = (await http.get("/subscriptions")).json()["Subscriptions"][0]["SubscriptionId"]
        services = f"/subscriptions/{sub}/services/hostedservices"
        assert (await http.post(services, json={"ServiceName": "junk"})).status_code == 201
        slot = f"{services}/junk/deploymentslots/production"
        small = {"Name": "junk", "Package": base64.b64encode(b"not a zip").decode()}
        assert (await http.post(slot, json=small)).status_code == 400  # warm: imports, caches
        before = served.memory_info().rss

        # 200 MB declared: refused on the header, at once, with the body never sent.
        head = {"content-type": "application/json", "content-length": str(200_000_000)}
        status, seconds = await raw_post(url, slot, token, head, b'{"Name": "junk", "Package": "')
        assert status == 413
        assert seconds < 2.0, seconds

        # Junk under the limit (not JSON): streamed to a file, refused, the file removed.
        # (Random bytes beginning with a digit would read as a JSON number: not this test's case.)
        junk = b"\xff" + os.urandom(60 * MiB - 1)
        response = await http.post(slot, content=junk, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert "not JSON" in response.json()["Error"]["Message"]

        # JSON whose package is 40 MiB of junk: refused by FFE as not a .cspkg.
        body = {"Name": "junk", "Package": base64.b64encode(junk[: 40 * MiB]).decode()}
        response = await http.post(slot, json=body)
        del body
        assert response.status_code == 400, response.text
        assert response.json()["Error"]["Code"] == "InvalidPackage"

        # A package over the limit in a body under it (the body's limit has room beside
        # the package for the configuration): refused on its decoded size.
        body = {"Name": "junk", "Package": base64.b64encode(junk[:1] * (64 * MiB + 1)).decode()}
        del junk
        response = await http.post(slot, json=body)
        del body
        assert response.status_code == 413, response.text
        assert "over the limit" in response.json()["Error"]["Message"]

        # No Content-Length (chunked): refused once past the limit.
        async def chunks() -> AsyncIterator[bytes]:
            piece = b"x" * MiB
            for _ in range(120):
                yield piece

        try:
            response = await http.post(slot, content=chunks(), timeout=20)
            assert response.status_code == 413, response.text
        except httpx.TimeoutException:  # (it was held until the client gave up: 60 s)
            raise AssertionError("a refused streamed upload held its connection open") from None
        except httpx.TransportError:
            pass  # the server answered 413 and closed while we were still sending

        grown = served.memory_info().rss - before
        print(f"fabric serve grew {grown / MiB:.1f} MiB")
        assert grown < MAX_GROWTH, f"fabric serve grew {grown / MiB:.1f} MiB"
        assert not any((state / "uploads").iterdir())  # every spooled body was removed
        assert (await http.get(slot)).status_code == 404  # nothing was created
