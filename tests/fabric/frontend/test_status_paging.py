"""Large deployments are paged: GET .../deploymentslots/{slot}?limit=N&cursor=C answers a page of
instances and the cursor of the next; bad values are a 400; the client reads page by page and
`fabric status` shows the first --limit instances, --json every one (through the real controller)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import fabric.client.asynchronous as client_module
from fabric.frontend.auth import read_api_url, read_token
from tests.fabric.frontend.test_cli import cli
from tests.fabric.frontend.test_real_controller import real_fabric

__all__ = ["real_fabric"]  # the fixture, used by name

COUNT = 7


async def deploy_seven(state: Path, hello: Path) -> None:
    config = hello / "ServiceConfiguration.Local.cscfg"
    config.write_text(config.read_text().replace('<Instances count="2" />', f'<Instances count="{COUNT}" />'))
    code, _, err = await cli("deploy", str(hello), "--state-dir", str(state))
    assert code == 0, err


def api(state: Path) -> httpx.AsyncClient:
    url, token = read_api_url(state), read_token(state)
    assert url is not None and token is not None
    return httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {token}"})


async def slot_path(http: httpx.AsyncClient) -> str:
    sub = (await http.get("/subscriptions")).json()["Subscriptions"][0]["SubscriptionId"]
    return f"/subscriptions/{sub}/services/hostedservices/hello/deploymentslots/production"


@pytest.mark.timeout(60)
async def test_pages_follow_each_other_and_add_up_to_the_whole_view(real_fabric: Path, hello: Path) -> None:
    await deploy_seven(real_fabric, hello)
    async with api(real_fabric) as http:
        path = await slot_path(http)
        whole = (await http.get(path)).json()
        seen: list[dict[str, object]] = []
        cursor, sizes = "", []
        while True:
            params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
            page = (await http.get(path, params=params)).json()
            assert page["total"] == COUNT
            assert {k: v for k, v in page["deployment"].items() if k not in ("instances", "endpoints")} == {
                k: v for k, v in whole.items() if k not in ("instances", "endpoints")
            }
            sizes.append(len(page["deployment"]["instances"]))
            seen += page["deployment"]["instances"]
            cursor = page["next_cursor"]
            if not cursor:
                break
    assert sizes == [3, 3, 1]
    assert seen == whole["instances"] and len(whole["instances"]) == COUNT


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-1"},
        {"limit": "three"},
        {"limit": "9" * 30},
        {"limit": ""},
        {"cursor": "Hello_IN_1"},
        {"limit": "3", "cursor": "garbage"},
        {"limit": "3", "cursor": "Hello_IN_" + "9" * 40},
        {"limit": "3", "cursor": "x" * 400},
        {"limit": "3", "cursor": "Hello_IN_1\n"},
    ],
)
async def test_hostile_paging_values_are_a_one_line_400(
    real_fabric: Path, hello: Path, query: dict[str, str]
) -> None:
    await deploy_seven(real_fabric, hello)
    async with api(real_fabric) as http:
        resp = await http.get(await slot_path(http), params=query)
    assert resp.status_code == 400, resp.text
    message = resp.json()["Error"]["Message"]
    assert "\n" not in message and len(message) < 200
    assert "limit" in message or "cursor" in message


@pytest.mark.timeout(60)
async def test_status_reads_page_by_page_and_shows_the_first_limit(
    real_fabric: Path, hello: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await deploy_seven(real_fabric, hello)
    s = ("--state-dir", str(real_fabric))
    monkeypatch.setattr(client_module, "PAGE", 2)  # four pages for seven instances
    code, out, err = await cli("status", "--json", *s)
    assert code == 0, err
    [view] = json.loads(out)["deployments"]
    assert [i["id"] for i in view["instances"]] == [f"Hello_IN_{n}" for n in range(COUNT)]

    code, out, err = await cli("status", "--limit", "3", *s)
    assert code == 0, err
    assert [n for n in range(COUNT) if f"Hello_IN_{n} " in out] == [0, 1, 2]
    assert "showing 3 of 7 instances" in out

    code, out, err = await cli("status", "--json", "--limit", "3", *s)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--limit" in err
