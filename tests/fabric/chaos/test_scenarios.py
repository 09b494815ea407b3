"""Scenarios end to end with real processes: the guestbook under role kills, a host partition,
and an interrupted run whose faults are rolled back."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import msgspec
import psutil
import pytest

from fabric.chaos.journal import read_journal
from fabric.chaos.report import Report
from fabric.chaos.runner import Run, run_on
from fabric.chaos.scenario import load_scenario
from fabric.chaos.schedule import Topology, plan
from tests.fabric.chaos.chaos_kit import EXAMPLES, all_ready, guestbook, scenario


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_role_kill_every_2_s_keeps_99_percent_of_requests(tmp_path: Path) -> None:
    """`fabric chaos run --embedded`: its own fabric, the guestbook (2 instances per role), a
    role host SIGKILLed every 2 s, load through the load balancer; then everything stopped."""
    report_file, journal_file = tmp_path / "report.json", tmp_path / "journal.json"
    command = [
        sys.executable, "-m", "fabric.cli", "chaos", "run", str(EXAMPLES / "role-kills.toml"),
        "--seed", "7", "--duration", "16", "--embedded", "--quiet", "--state-dir", str(tmp_path / "state"),
        "--json", str(report_file), "--journal", str(journal_file), "--html", str(tmp_path / "report.html"),
    ]  # fmt: skip
    result = await anyio.run_process(command, check=False, cwd=tmp_path)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()[-3000:]
    report = msgspec.json.decode(report_file.read_bytes(), type=Report)
    during = report.steady_state["during"].load
    assert during.availability is not None and during.availability >= 0.99, out
    assert during.sent >= 250  # 20 requests/s for 16 s
    kills = [f for f in report.faults if f.outcome == "applied"]
    assert len(kills) == len(report.faults) == 8
    for kill in kills:
        assert kill.record is not None
        [hit] = kill.record.hits
        assert hit.what == "process" and hit.detail == "role-host" and hit.pid
        assert hit.name in ("WaIISHost", "WaWorkerHost")
        # The fabric saw each one and the instance came back.
        assert kill.detect is not None and kill.detect < 2.0, out
        assert kill.recover is not None and kill.recover < 5.0, out
        if hit.name == "WaIISHost":
            assert kill.leave_rotation is not None and kill.leave_rotation <= kill.recover
    assert report.left_behind == [] and report.held and report.status == "completed"
    assert "hypothesis HELD" in out
    # The same report as one page that opens offline: a mark per fault on the availability chart.
    page = (tmp_path / "report.html").read_text()
    assert page.count('class="fault-mark"') == 8 and page.count('class="fault-bar"') == 8
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert report.availability and min(v for _, v in report.availability) < 1.0
    # The journal holds the schedule the seed gives, ready to replay.
    journal = read_journal(journal_file)
    again = plan(load_scenario(EXAMPLES / "role-kills.toml"), 7, Topology.of({"Web": 2, "Worker": 2}), 16)
    assert journal.schedule == again and journal.report == report


PARTITION = """
title = "partition"
duration = 9
[load]
rate = 10
[steady_state]
before = 1
after = 1
[[steady_state.probes]]
type = "http-success-rate"
tolerance = { min = 0.9 }
[[steady_state.probes]]
type = "instances-ready"
[[method]]
fault = "partition"
target = "host"
instance = "Web_IN_0"
at = 0.5
duration = 5
"""


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_partitioned_host_is_healed(tmp_path: Path) -> None:
    async with guestbook(tmp_path / "state") as book:
        before = await book.targets()
        lost = next(i.host for i in before.instances if i.id == "Web_IN_0")
        moved = {i.id for i in before.instances if i.host == lost}
        run = Run(scenario=scenario(PARTITION), scenario_file="partition.toml", seed=1)
        report = await run_on(book.state_dir, run)
        [fault] = report.faults
        assert fault.outcome == "applied" and fault.record is not None
        assert fault.record.hits[0].name == f"controller<->{lost}"
        assert set(fault.record.instances) == moved
        # The controller stopped hearing the host (host_failure_timeout: 3 s), and healed it.
        assert fault.detect is not None and 2.0 < fault.detect < 6.0
        assert fault.recover is not None
        assert report.held, report.steady_state
        after = await book.until(all_ready)
        hosts = {h.id for h in after.hosts}
        assert lost not in hosts
        assert all(i.host in hosts for i in after.instances if i.id in moved)


INTERRUPTED = """
title = "interrupted"
duration = 60
[steady_state]
before = 0.5
[[method]]
fault = "hang"
target = "role-host"
instance = "Worker_IN_0"
at = 0.1
[[method]]
fault = "toxic"
endpoint = "Web/HttpIn"
at = 0.1
toxic = { type = "latency", latency = 100 }
[[method]]
fault = "partition"
target = "guest"
instance = "Worker_IN_1"
at = 0.1
"""


async def _until_active(book: object, count: int) -> list:  # type: ignore[type-arg]
    async with book.client() as client:  # type: ignore[attr-defined]
        with anyio.fail_after(30):
            while True:
                active = [f for f in await client.faults() if f.state == "active"]
                if len(active) >= count:
                    return active
                await anyio.sleep(0.05)


async def _nothing_in_force(book: object, pid: int) -> None:
    assert psutil.Process(pid).status() != psutil.STATUS_STOPPED
    async with book.client() as client:  # type: ignore[attr-defined]
        assert [f.id for f in await client.faults() if f.state == "active"] == []
        found = await client.targets()
    assert found.endpoints[0].toxics == []


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_an_interrupted_run_rolls_its_faults_back(tmp_path: Path) -> None:
    async with guestbook(tmp_path / "state") as book:
        # Cancelled from outside (the process is being stopped): the shielded rollback runs.
        run = Run(scenario=scenario(INTERRUPTED), scenario_file="interrupted.toml", seed=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_on, book.state_dir, run)
            active = await _until_active(book, 3)
            hang = next(f for f in active if f.kind == "hang")
            pid = hang.hits[0].pid
            assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
            tg.cancel_scope.cancel()
        await _nothing_in_force(book, pid)
        await book.until(all_ready)

        # Interrupted by the user (Ctrl-C once): rollbacks, then a report saying so.
        run = Run(scenario=scenario(INTERRUPTED), scenario_file="interrupted.toml", seed=1)
        async with anyio.create_task_group() as tg:

            async def interrupt() -> None:
                await _until_active(book, 3)
                run.interrupt.set()

            tg.start_soon(interrupt)
            report = await run_on(book.state_dir, run)
        assert report.status == "interrupted" and not report.held
        assert [f.outcome for f in report.faults] == ["applied"] * 3
        undone = " | ".join(report.rollbacks)
        assert len(report.rollbacks) == 3, undone
        assert (
            "SIGCONT WaWorkerHost" in undone
            and "toxic latency" in undone
            and "link to Worker_IN_1 cleared" in undone
        )
        pid = next(f for f in report.faults if f.kind == "hang").record.hits[0].pid  # type: ignore[union-attr]
        await _nothing_in_force(book, pid)
