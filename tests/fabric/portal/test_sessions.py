"""Portal sign-in, sessions and CSRF over plain HTTP (the browser tests are in test_browser.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fabric.frontend.real_fabric_kit import RealFabric, open_real_fabric
from tests.fabric.frontend.test_cli import cli


@pytest.fixture
async def fabric(tmp_path: Path, hello: Path) -> AsyncIterator[RealFabric]:
    async with open_real_fabric(tmp_path / "state") as served:
        code, _, err = await cli("deploy", str(hello), *served.cli_state)
        assert code == 0, err
        yield served


@pytest.fixture
async def browser(fabric: RealFabric) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no token: what a browser is."""
    async with httpx.AsyncClient(base_url=fabric.url, follow_redirects=False) as client:
        yield client


async def sign_in(browser: httpx.AsyncClient, token: str) -> str:
    """Sign in; return the page's CSRF token."""
    resp = await browser.post("/portal/signin", data={"token": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/"
    page = (await browser.get("/")).text
    return page.split('name="csrf-token" content="')[1].split('"')[0]


async def test_sign_in_with_the_token_buys_a_strict_http_only_session(
    fabric: RealFabric, browser: httpx.AsyncClient
) -> None:
    page = await browser.get("/")
    assert page.status_code == 200 and 'id="signin"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    wrong = await browser.post("/portal/signin", data={"token": "guess"})
    assert wrong.status_code == 401 and "not the token of this fabric" in wrong.text
    assert "set-cookie" not in wrong.headers

    resp = await browser.post("/portal/signin", data={"token": fabric.token})
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("reddog_session=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = await browser.get("/")
    assert 'name="csrf-token"' in page.text and 'id="instances"' in page.text
    views = (await browser.get("/subscriptions")).json()
    assert views["Subscriptions"]


async def test_without_a_session_json_and_html_are_refused(browser: httpx.AsyncClient) -> None:
    for path in (
        "/subscriptions",
        "/events",
        "/events/stream",
        "/portal/chaos/report",
        "/portal/hosts",
        "/chaos/faults",
    ):
        assert (await browser.get(path)).status_code == 401, path
    forged = await browser.get("/", headers={"cookie": "reddog_session=forged"})
    assert forged.text.count('id="signin"') == 1
    assert (
        await browser.get("/subscriptions", headers={"cookie": "reddog_session=forged"})
    ).status_code == 401


async def test_a_change_needs_the_csrf_token(fabric: RealFabric, browser: httpx.AsyncClient) -> None:
    csrf = await sign_in(browser, fabric.token)
    slot = (await browser.get("/subscriptions")).json()["Subscriptions"][0]["SubscriptionId"]
    path = f"/subscriptions/{slot}/services/hostedservices/hello/deploymentslots/production?comp=status"
    refused = await browser.post(path, json={"Status": "Suspended"})
    assert refused.status_code == 401
    forged = await browser.post(path, json={"Status": "Suspended"}, headers={"x-csrf-token": "x" * 43})
    assert forged.status_code == 401
    accepted = await browser.post(path, json={"Status": "Suspended"}, headers={"x-csrf-token": csrf})
    assert accepted.status_code == 202

    out = await browser.post("/portal/signout", headers={"x-csrf-token": csrf})
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    assert (await browser.get("/subscriptions")).status_code == 401


async def test_the_chaos_report_and_hosts_are_served_to_a_session(
    fabric: RealFabric, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, fabric.token)
    report = await browser.get("/portal/chaos/report", params={"service": "hello"})
    assert report.status_code == 200 and report.text.count("<svg") == 2 and "no fault yet" in report.text
    [pool] = (await browser.get("/portal/hosts")).json()
    assert {i["instance"] for i in pool["instances"]} == {"Hello_IN_0", "Hello_IN_1"} and pool["hosts"]
    css = await browser.get("/portal/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await browser.get("/portal/static/../routes.py")).status_code in (401, 404)
