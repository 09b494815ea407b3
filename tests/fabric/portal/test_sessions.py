"""Portal sign-in and sessions over plain HTTP (the browser tests are in test_browser.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
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


async def sign_in(browser: httpx.AsyncClient, token: str) -> dict[str, str]:
    """Sign in as the page's script does; the headers that carry the session."""
    resp = await browser.post("/portal/signin", data={"token": token})
    assert resp.status_code == 200, resp.text
    return {"x-reddog-session": resp.json()["session"]}


async def test_sign_in_with_the_token_buys_a_session_for_the_page_and_no_cookie(
    fabric: RealFabric, browser: httpx.AsyncClient
) -> None:
    page = await browser.get("/")
    assert page.status_code == 200 and 'id="signin"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    wrong = await browser.post("/portal/signin", data={"token": "guess"})
    assert wrong.status_code == 401 and "not the token of this fabric" in wrong.text
    assert "set-cookie" not in wrong.headers

    resp = await browser.post("/portal/signin", data={"token": fabric.token})
    assert resp.status_code == 200 and "set-cookie" not in resp.headers
    assert resp.headers["cache-control"] == "no-store" and len(resp.json()["session"]) >= 43
    headers = {"x-reddog-session": resp.json()["session"]}
    views = (await browser.get("/subscriptions", headers=headers)).json()
    assert views["Subscriptions"]
    # The page is the same with or without a session, and holds no data: the script reads it.
    page = await browser.get("/", headers=headers)
    assert 'id="instances"' in page.text and "Hello_IN" not in page.text and "session" not in page.text


async def test_a_session_replayed_as_a_cookie_is_refused(
    fabric: RealFabric, browser: httpx.AsyncClient
) -> None:
    """A role's site on another port of this host gets the browser's cookies for the host: the
    portal's authority must not be among them (it lives in the page's header)."""
    resp = await browser.post("/portal/signin", data={"token": fabric.token})
    assert resp.status_code in (200, 303)
    replayed = dict(resp.cookies)  # what the browser would keep and send to 127.0.0.1:8080
    if resp.headers.get("content-type", "").startswith("application/json"):
        replayed["reddog_session"] = resp.json()["session"]  # even if the secret leaked into one
    async with httpx.AsyncClient(base_url=fabric.url, cookies=replayed) as role:
        for path in ("/subscriptions", "/events", "/portal/hosts", "/portal/chaos/report", "/chaos/faults"):
            assert (await role.get(path)).status_code == 401, path
        assert "Hello_IN" not in (await role.get("/")).text


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
    for forged in ({"x-reddog-session": "forged"}, {"x-reddog-session": "x" * 10_000}):
        assert (await browser.get("/subscriptions", headers=forged)).status_code == 401


async def test_a_change_needs_the_session_header_and_sign_out_ends_it(
    fabric: RealFabric, browser: httpx.AsyncClient
) -> None:
    headers = await sign_in(browser, fabric.token)
    slot = (await browser.get("/subscriptions", headers=headers)).json()["Subscriptions"][0]["SubscriptionId"]
    path = f"/subscriptions/{slot}/services/hostedservices/hello/deploymentslots/production?comp=status"
    refused = await browser.post(path, json={"Status": "Suspended"})
    assert refused.status_code == 401
    forged = await browser.post(path, json={"Status": "Suspended"}, headers={"x-reddog-session": "x" * 43})
    assert forged.status_code == 401
    accepted = await browser.post(path, json={"Status": "Suspended"}, headers=headers)
    assert accepted.status_code == 202

    assert (await browser.post("/portal/signout")).status_code == 401
    out = await browser.post("/portal/signout", headers=headers)
    assert out.status_code == 200
    assert (await browser.get("/subscriptions", headers=headers)).status_code == 401


async def test_the_chaos_report_and_hosts_are_served_to_a_session(
    fabric: RealFabric, browser: httpx.AsyncClient
) -> None:
    headers = await sign_in(browser, fabric.token)
    report = await browser.get("/portal/chaos/report", params={"service": "hello"}, headers=headers)
    assert report.status_code == 200 and report.text.count("<svg") == 2 and "no fault yet" in report.text
    [pool] = (await browser.get("/portal/hosts", headers=headers)).json()
    assert {i["instance"] for i in pool["instances"]} == {"Hello_IN_0", "Hello_IN_1"} and pool["hosts"]
    assert all(h["cores"] == 4 for h in pool["hosts"]) and sum(h["cores_used"] for h in pool["hosts"]) >= 2
    with_token = await fabric.http.get("/portal/chaos/report")  # a script may use the API token
    assert with_token.status_code == 200 and "<svg" in with_token.text
    css = await browser.get("/portal/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await browser.get("/portal/static/../routes.py")).status_code in (401, 404)


async def test_instance_pages_take_only_a_listed_vm_and_a_known_log(
    fabric: RealFabric, browser: httpx.AsyncClient
) -> None:
    browser.headers.update(await sign_in(browser, fabric.token))
    for vm in ("../../etc", "nope", ""):
        resp = await browser.get("/portal/instance", params={"vm": vm})
        assert resp.status_code == 400 and "no VM named" in resp.json()["Error"]["Message"]
    vm = fabric.state / "vms" / "hello.d.Hello_IN_0"
    (vm / "C" / "Logs").mkdir(parents=True)
    (vm / "C" / "Logs" / "WaAppAgent.log").write_text("one\ntwo\n")
    detail = (await browser.get("/portal/instance", params={"vm": vm.name})).json()
    assert detail["logs"] == ["WaAppAgent"] and detail["processes"] == []
    missing = await browser.get("/portal/logs/stream", params={"vm": vm.name, "file": "../token"})
    assert missing.status_code == 404 and "it has: WaAppAgent" in missing.json()["Error"]["Message"]
    async with browser.stream(
        "GET", "/portal/logs/stream", params={"vm": vm.name, "file": "WaAppAgent"}
    ) as resp:
        lines = resp.aiter_lines()
        got = [await anext(lines) for _ in range(8)]
        assert [g for g in got if g.startswith("data: ")] == ['data: "one"', 'data: "two"']
        with (vm / "C" / "Logs" / "WaAppAgent.log").open("a") as log:
            log.write("three\n")
        while (line := await anext(lines)) != 'data: "three"':
            assert not line.startswith("data: "), line


async def test_the_configuration_form_reads_the_deployment_and_checks_without_changing(
    fabric: RealFabric, browser: httpx.AsyncClient
) -> None:
    headers = await sign_in(browser, fabric.token)
    query = {"service": "hello", "slot": "production"}
    form = (await browser.get("/portal/configuration", params=query, headers=headers)).json()
    [role] = form["roles"]
    assert role["name"] == "Hello" and role["instances"] == "2" and role["settings"][0]["name"] == "Greeting"
    bad = {"roles": {"Hello": {"instances": "0", "settings": {"Greeting": "hi"}}}}
    checked = await browser.post("/portal/configuration/check", params=query, json=bad, headers=headers)
    [problem] = checked.json()["problems"]
    assert problem["role"] == "Hello" and problem["field"] == "instances"
    assert problem["message"].endswith("Instances@count: 0 is out of range; use a number of at least 1")
    assert (await browser.get("/portal/configuration", params=query, headers=headers)).json()[
        "generation"
    ] == form["generation"]
    unsigned = await browser.post("/portal/configuration/check", params=query, json=bad)
    assert unsigned.status_code == 401


async def test_a_scenario_run_streams_progress_then_its_report_one_at_a_time(
    fabric: RealFabric, browser: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fabric.portal import scenarios

    release = anyio.Event()

    async def fake(state_dir: Path, text: str, progress: Callable[[str], None]) -> str:
        progress(f"running {text}")
        await release.wait()
        return "<p>report</p>"

    headers = await sign_in(browser, fabric.token)
    monkeypatch.setattr(scenarios, "_runner", [])
    assert (await browser.post("/portal/chaos/scenario", content="x", headers=headers)).status_code == 501
    monkeypatch.setattr(scenarios, "_runner", [fake])
    assert (await browser.post("/portal/chaos/scenario", content="x")).status_code == 401  # no session
    big = await browser.post("/portal/chaos/scenario", content="x" * (64 * 1024 + 1), headers=headers)
    assert big.status_code == 413
    with anyio.fail_after(10):
        async with browser.stream("POST", "/portal/chaos/scenario", content="t = 1", headers=headers) as resp:
            lines = resp.aiter_lines()
            while await anext(lines) != "event: progress":
                pass
            assert await anext(lines) == 'data: "running t = 1"'
            busy = await browser.post("/portal/chaos/scenario", content="t = 2", headers=headers)
            assert busy.status_code == 409
            release.set()
            while await anext(lines) != "event: report":
                pass
            assert await anext(lines) == 'data: "<p>report</p>"'
