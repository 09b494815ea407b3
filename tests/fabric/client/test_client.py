"""The API client against the real served API (with a stand-in controller): each refusal is its
own exception class with a one-line message, and the blocking face gives the async client's
answers and errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

from fabric.client import (
    ApiRefused,
    AsyncFabricClient,
    BadRequest,
    Conflict,
    FabricClient,
    Forbidden,
    NoFabricRunning,
    NotFound,
    ServerError,
    Unauthorized,
)
from fabric.client.deployments import default_name, deploy_service, pick_service
from fabric.client.errors import refusal
from tests.fabric.frontend.frontend_kit import FIXTURES, open_api


async def test_each_refusal_of_the_api_is_a_named_exception_with_one_line(tmp_path: Path) -> None:
    async with open_api(tmp_path / "state") as api, AsyncFabricClient(api.state) as client:
        with pytest.raises(NotFound) as missing:
            await client.deployment("nope", "production")
        await client.create_hosted_service("hello")
        with pytest.raises(Conflict) as taken:
            await client.create_hosted_service("hello")
        with pytest.raises(BadRequest) as bad:
            await client.create_hosted_service("-no-")
        for refused, status in ((missing, 404), (taken, 409), (bad, 400)):
            assert refused.value.status == status and "\n" not in str(refused.value), refused.value
        assert (
            str(taken.value) == "hosted service 'hello' already exists; choose another name (ConflictError)"
        )

        (api.state / "token").write_text("not-the-token\n")
        async with AsyncFabricClient(api.state) as stranger:
            with pytest.raises(Unauthorized) as refused_token:
                await stranger.hosted_services()
        assert str(refused_token.value) == (
            f"the fabric at {api.url} refused the token in {api.state / 'token'}; "
            "is that folder this fabric's state folder?"
        )


def test_statuses_without_a_class_of_their_own_map_by_range() -> None:
    url, state = "http://127.0.0.1:1", Path("/state")
    body = {"Error": {"Code": "Nope", "Message": "you may not\nreally"}}
    forbidden = refusal(httpx.Response(403, json=body), url, state)
    assert isinstance(forbidden, Forbidden) and str(forbidden) == "you may not really (Nope)"
    assert isinstance(refusal(httpx.Response(503, json=body), url, state), ServerError)
    teapot = refusal(httpx.Response(418, content=b"<html>"), url, state)
    assert isinstance(teapot, BadRequest) and str(teapot) == f"HTTP 418 from {url} (Unknown)"
    assert all(issubclass(kind, ApiRefused) for kind in (Forbidden, ServerError, Unauthorized))


async def test_the_blocking_client_runs_calls_and_helpers_and_raises_the_same_errors(tmp_path: Path) -> None:
    with pytest.raises(NoFabricRunning):
        FabricClient(tmp_path / "nothing")
    async with open_api(tmp_path / "state") as api:

        def use() -> tuple[str, str, str]:
            with FabricClient(api.state) as client:
                started = client.run(deploy_service, FIXTURES / "hello", None)
                with pytest.raises(NotFound):
                    client.deployment("hello", "staging")
                return (
                    started.service,
                    client.deployment("hello", "production").status,
                    client.run(pick_service, None, "production"),
                )

        assert await anyio.to_thread.run_sync(use) == ("hello", "Running", "hello")


def test_default_deployment_names_of_the_two_slots_differ_within_one_second() -> None:
    # A script deploying to production, then at once to staging: the second was refused with
    # "deployment name ... is taken" (names are unique across a hosted service's slots).
    now = dt.datetime(2026, 12, 6, 7, 11, 43, tzinfo=dt.UTC)
    names = {default_name("hello", slot, now) for slot in ("production", "staging")}
    assert names == {"hello-20261206-071143", "hello-staging-20261206-071143"}
