"""One-shot faults against a running guestbook, through `fabric chaos ...` and the API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import psutil
import pytest

from fabric.chaos.journal import Journal, read_journal, write_journal
from fabric.chaos.schedule import Topology, plan
from fabric.client import ApiRefused
from fabric.controller.chaos.messages import (
    ConfigStorm,
    Crash,
    FillStorage,
    Inject,
    Kill,
    LinkFault,
    StartupFault,
    Target,
)
from tests.fabric.chaos.chaos_kit import Guestbook, all_ready, guestbook, scenario


async def chaos_cli(book: Guestbook, *args: str) -> tuple[int, str, str]:
    """Run `fabric chaos ARGS --state-dir ...` in a child process."""
    command = [sys.executable, "-m", "fabric.cli", "chaos", *args, "--state-dir", str(book.state_dir)]
    result = await anyio.run_process(command, check=False, cwd=book.state_dir.parent)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def status_of(book_targets: object, instance: str) -> str:
    return next(i.status for i in book_targets.instances if i.id == instance)  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_faults_from_the_command_line_and_the_api(tmp_path: Path) -> None:
    async with guestbook(tmp_path / "state") as book:
        code, out, err = await chaos_cli(book, "targets", "--json")
        assert code == 0, err
        found = json.loads(out)
        web0 = next(i for i in found["instances"] if i["id"] == "Web_IN_0")
        assert (
            set(web0["processes"]) >= {"guest-agent", "bootstrapper", "role-host"}
            and web0["rotation"] is True
        )

        # kill by place, at random among a role's instances (seeded)
        code, out, err = await chaos_cli(
            book, "kill", "--target", "role-host", "--role", "Worker", "--random", "--seed", "3", "--json"
        )
        assert code == 0, err
        record = json.loads(out)
        [hit] = record["hits"]
        assert hit["name"] == "WaWorkerHost" and hit["instance"].startswith("Worker_IN_")
        assert (
            not psutil.pid_exists(hit["pid"]) or psutil.Process(hit["pid"]).status() == psutil.STATUS_ZOMBIE
        )

        # a toxic that lasts half a second, then undoes itself
        code, out, err = await chaos_cli(book, "toxic", "latency", "--latency", "50", "--duration", "0.5")
        assert code == 0 and "latency" in out, err
        assert "; active for 0.5 s, until " in out and "until undone" not in out, out

        # a user's mistake is one line and exit code 2
        code, out, err = await chaos_cli(book, "kill", "--target", "role-host", "--instance", "Nope_IN_0")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Web_IN_0" in err, err

        async with book.client() as client:
            # crash (SIGABRT) a role host: the bootstrapper restarts it
            crash = await client.inject(
                Inject(fault=Crash(target=Target(place="role-host", instance="Web_IN_1")))
            )
            assert crash.detail.startswith("SIGABRT WaIISHost")
            # a LocalStorage folder filled past its sizeInMB, removed by the undo
            fill = await client.inject(Inject(fault=FillStorage(target=Target(instance="Web_IN_0"))))
            path = Path(fill.hits[0].name)
            assert path.stat().st_size == 11 * 1024 * 1024  # Scratch is 10 MB
            # the host agent's link to a VM, delayed with jitter
            link = await client.inject(
                Inject(
                    fault=LinkFault(
                        target=Target(instance="Worker_IN_0"), link="guest", delay=0.05, jitter=0.05
                    )
                )
            )
            assert link.hits[0].name.endswith("<->Worker_IN_0") and link.state == "active"
            # a second fault on the same link is refused until the first is undone
            with pytest.raises(ApiRefused) as refused:
                await client.inject(
                    Inject(fault=LinkFault(target=Target(instance="Worker_IN_0"), link="guest", cut=True))
                )
            assert refused.value.status == 409
            # a configuration storm: changes in a row, the setting back at its value at the end
            storm = await client.inject(Inject(fault=ConfigStorm(target=Target(role="Worker"), count=2)))
            with anyio.fail_after(60):
                while (
                    current := next(f for f in await client.faults() if f.id == storm.id)
                ).state == "active":
                    await anyio.sleep(0.1)
            assert current.state == "done" and "2 of 2 changes applied" in current.detail, current.detail

        code, out, err = await chaos_cli(book, "rollback")
        assert code == 0, err
        assert "removed" in out and "link to Worker_IN_0 cleared" in out
        assert not path.exists()
        code, out, err = await chaos_cli(book, "faults")
        assert code == 0 and "active" not in out, out
        await book.until(all_ready)

        # a whole host killed: every process of it goes at once, its instances heal elsewhere
        before = await book.targets()
        host = next(i.host for i in before.instances if i.id == "Worker_IN_1")
        code, out, err = await chaos_cli(
            book, "kill", "--target", "host", "--instance", "Worker_IN_1", "--json"
        )
        assert code == 0, err
        killed = json.loads(out)["hits"]
        assert {h["detail"] for h in killed} >= {"host-agent", "vm", "bootstrapper", "role-host"}
        with anyio.fail_after(10):
            while [
                h["pid"]
                for h in killed
                if psutil.pid_exists(h["pid"]) and psutil.Process(h["pid"]).status() != psutil.STATUS_ZOMBIE
            ]:
                await anyio.sleep(0.05)
        after = await book.until(lambda t: all_ready(t) and host not in {h.id for h in t.hosts})
        assert all(i.host != host for i in after.instances)


REPLAY = """
title = "replayed"
duration = 2
[load]
rate = 10
[steady_state]
before = 0.5
after = 0.5
[[method]]
fault = "kill"
target = "role-host"
instance = "Web_IN_1"
at = 0.5
[[rollbacks]]
action = "undo"
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_journal_replays_against_a_running_fabric(tmp_path: Path) -> None:
    s = scenario(REPLAY)
    journal = tmp_path / "journal.json"
    schedule = plan(s, 5, Topology.of({"Web": 2, "Worker": 2}))
    topology = Topology.of({"Web": 2, "Worker": 2})
    write_journal(
        journal,
        Journal(
            scenario_file="replayed.toml",
            scenario=s,
            seed=5,
            duration=2,
            topology=topology,
            schedule=schedule,
        ),
    )
    async with guestbook(tmp_path / "state") as book:
        code, out, err = await chaos_cli(
            book, "replay", str(journal), "--json", str(tmp_path / "report.json")
        )
        assert code == 0, out + err
        assert "hypothesis HELD" in out and "-> WaIISHost pid" in out
        replayed = read_journal(tmp_path / "journal.replay.json")
        assert replayed.schedule == schedule and replayed.report is not None
        assert replayed.report.rollbacks == ["undo: 0 fault(s) undone"]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_startup_directives_make_the_next_start_misbehave(tmp_path: Path) -> None:
    async with guestbook(tmp_path / "state") as book, book.client() as client:
        # on_start fails once, at the next start of the role host (here: after a kill)
        fail = StartupFault(target=Target(instance="Worker_IN_0"), on_start="fail", trigger="none")
        planted = await client.inject(Inject(fault=fail))
        directive = Path(planted.hits[0].name)
        assert directive.name == "Chaos.json" and json.loads(directive.read_text()) == {
            "on_start": {"mode": "fail"}
        }
        await client.inject(Inject(fault=Kill(target=Target(place="role-host", instance="Worker_IN_0"))))
        with anyio.fail_after(15):
            while directive.exists():  # consumed once, at the next start
                await anyio.sleep(0.1)
        await book.until(all_ready)
        # a startup task fails: the instance reboots into FailedStartingRole; the undo reboots it clean
        failing = await client.inject(
            Inject(fault=StartupFault(target=Target(instance="Worker_IN_1"), startup_task="fail"))
        )
        await book.until(lambda t: status_of(t, "Worker_IN_1") == "FailedStartingRole", 60)
        [undone] = await client.undo(failing.id)
        assert "rebooting Worker_IN_1" in undone.detail
        await book.until(all_ready, 60)
