"""``GET /metrics`` with metrics_public answers anyone: a flood of anonymous scrapes asks the
controller once a CACHE_SECONDS, not once a scrape; with the token every scrape is fresh."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from fabric.controller.metrics import MetricsSnapshot
from fabric.frontend import metrics_routes
from fabric.frontend.rdfe import Rdfe
from tests.fabric.frontend.real_fabric_kit import open_real_fabric

pytestmark = [pytest.mark.timeout(60)]

SCRAPES = 40


async def test_a_flood_of_public_scrapes_asks_the_controller_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = 0
    real = metrics_routes.snapshots

    async def counted(rdfe: Rdfe) -> list[MetricsSnapshot]:
        nonlocal asked
        asked += 1
        return await real(rdfe)

    monkeypatch.setattr(metrics_routes, "snapshots", counted)
    monkeypatch.setattr(metrics_routes, "CACHE_SECONDS", 30.0)  # the whole flood falls within it
    async with (
        open_real_fabric(tmp_path / "public", metrics_public=True) as public,
        httpx.AsyncClient(base_url=public.url, timeout=30) as anonymous,
    ):
        answers: list[httpx.Response] = []

        async def scrape() -> None:
            answers.append(await anonymous.get("/metrics"))

        async with anyio.create_task_group() as tg:
            for _ in range(SCRAPES):
                tg.start_soon(scrape)
        assert [a.status_code for a in answers] == [200] * SCRAPES
        assert all("fabric_host_alive" in a.text for a in answers)
        assert asked == 1  # before: once a scrape
        # the token's holders are not served the kept text
        for _ in range(3):
            assert (await public.http.get("/metrics")).status_code == 200
        assert asked == 4
