"""The portal in a real browser (Debian's chromium, driven by Playwright in a child process),
in front of a real fabric running the guestbook. Screenshots of every view are saved on failure
(the path is in the failure message)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fabric.frontend.test_metrics import samples, value
from tests.fabric.portal.portal_kit import Portal, guestbook_portal, needs_browser, run_browser

pytestmark = [needs_browser, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
async def portal(tmp_path: Path) -> AsyncIterator[Portal]:
    async with guestbook_portal(tmp_path / "state") as running:
        yield running


async def test_sign_in_shows_the_four_guestbook_instances_ready(portal: Portal, tmp_path: Path) -> None:
    seen = await run_browser("signin", portal, tmp_path / "screenshots")
    assert "not the token of this fabric" in seen["refused"]["error"] and seen["refused"]["cookies"] == 0
    assert sorted(seen["rows"]) == [
        ["Web_IN_0", "ReadyRole"],
        ["Web_IN_1", "ReadyRole"],
        ["Worker_IN_0", "ReadyRole"],
        ["Worker_IN_1", "ReadyRole"],
    ]
    # The session is the tab's (sessionStorage), in no cookie: a role's site on another port of
    # the same host (the browser sends it the host's cookies) gets nothing, nor does a new tab.
    assert seen["cookies"] == [] and seen["stored"] is True
    assert seen["role_site"] == {"cookie": None, "storage": 0}
    assert seen["new_tab"] == {"signin": True, "app": False}
    assert seen["signed_out"] == {"stored": 0, "replayed": 401}
    # Hosts: alive, cores taken by the instances on each, memory of its process tree, its VMs.
    assert len(seen["hosts"]) == 2
    for host, alive, _age, cores, memory, vms in seen["hosts"]:
        assert alive == "yes" and cores.endswith(" of 8") and memory.endswith(" MiB") and "_IN_" in vms, host
    async with httpx.AsyncClient(base_url=portal.url) as anonymous:
        assert (await anonymous.get("/subscriptions")).status_code == 401
        assert (await anonymous.get("/portal/chaos/report")).status_code == 401


async def test_a_role_host_killed_from_the_chaos_page_leaves_ready_and_comes_back_live(
    portal: Portal, tmp_path: Path
) -> None:
    seen = await run_browser("kill_from_chaos", portal, tmp_path / "screenshots")
    assert seen["marker"] == "no reload"
    assert seen["seen"][0] == "ReadyRole" and seen["seen"][-1] == "ReadyRole"
    assert any(s != "ReadyRole" for s in seen["seen"]), seen["seen"]
    assert len(seen["fault_rows"]) == 1 and "role-host@Web_IN_0" in seen["fault_rows"][0]
    assert seen["marks"] == ["f1"]
    assert "fault" in seen["event_kinds"] and "status" in seen["event_kinds"]
    # /metrics saw it too: a restart of that role host, one kill injected.
    async with httpx.AsyncClient(
        base_url=portal.url, headers={"authorization": f"Bearer {portal.token}"}
    ) as api:
        found = samples((await api.get("/metrics")).text)
    assert value(found, "fabric_role_host_restarts_total", instance="Web_IN_0") >= 1
    assert value(found, "fabric_role_host_restarts_total", instance="Web_IN_1") == 0
    assert value(found, "fabric_faults_injected_total", kind="kill") == 1
    assert value(found, "fabric_instances", role="Web", status="ReadyRole") == 2
    assert value(found, "fabric_lb_rotation_size", endpoint="Web/HttpIn") == 2


async def test_services_suspend_resume_swap_and_a_fault_undone_from_the_page(
    portal: Portal, tmp_path: Path
) -> None:
    seen = await run_browser("services_and_undo", portal, tmp_path / "screenshots")
    assert seen["statuses"] == ["Running", "Suspended", "Running"]
    assert seen["slots"] == ["production", "staging", "production"]
    assert seen["kept_after_dismissed_delete"] == 1
    assert seen["fault_states"] == ["active", "undone", "partition undone"]


async def test_the_configuration_form_refuses_a_bad_value_beside_it_and_applies_a_good_one(
    portal: Portal, tmp_path: Path
) -> None:
    seen = await run_browser("configure", portal, tmp_path / "screenshots")
    refused = seen["refused"]
    # `fabric validate`'s own words, beside the field, and the deployment did not change.
    assert refused["beside"] == (
        "ServiceConfiguration.Local.cscfg:4: Instances@count: 'abc' is not a whole number; use a number"
    ), refused
    assert refused["result"].startswith("not applied") and refused["generation"] == seen["before"]
    assert seen["log_file"] == "WaIISHost" and "changed setting Title" in seen["line"]
    assert seen["processes"] and seen["storage"] == ["Scratch"]


async def test_a_scenario_runs_from_the_chaos_page_and_draws_its_report(
    portal: Portal, tmp_path: Path
) -> None:
    seen = await run_browser("run_scenario", portal, tmp_path / "screenshots")
    assert "nonsense" in seen["refused"] and "\n" not in seen["refused"]
    assert seen["progress"][0].startswith("seed ") and len(seen["progress"]) > 2
    assert seen["marks"] == 2 and seen["bars"] == 2
    assert seen["download"] == "chaos-report.html"
