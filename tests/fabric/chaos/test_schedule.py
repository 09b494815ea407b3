"""Fault schedules: the same scenario and seed give the same faults, targets and times (no processes)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from fabric.chaos.journal import Journal, read_journal, write_journal
from fabric.chaos.scenario import ScenarioError, load_scenario
from fabric.chaos.schedule import Topology, plan
from fabric.cli import main
from fabric.controller.chaos.messages import Hang, Kill, LinkFault, Partition, ToxicFault
from tests.fabric.chaos.chaos_kit import EXAMPLES, scenario

GUESTBOOK = Topology.of({"Web": 2, "Worker": 2})

MIXED = """
title = "mixed"
duration = 30

[[method]]
fault = "kill"
target = "role-host"
roles = ["Web", "Worker"]
every = 2.0
jitter = 0.5

[[method]]
fault = "hang"
target = "guest-agent"
role = "Worker"
rate = 0.2
duration = 3

[[method]]
fault = "partition"
target = "host"
at = [5, 17.5]

[[method]]
fault = "toxic"
endpoint = "Web/HttpIn"
at = 10
toxic = { type = "latency", latency = 150, jitter = 20 }
"""


def encoded(schedule: object) -> bytes:
    return msgspec.json.encode(schedule)


def test_the_same_seed_gives_the_same_schedule() -> None:
    s = scenario(MIXED)
    first, second = plan(s, 42, GUESTBOOK), plan(s, 42, GUESTBOOK)
    assert encoded(first) == encoded(second)
    # Every kind of line planned something, in time order, within the method.
    assert [p.at for p in first] == sorted(p.at for p in first)
    assert all(0 <= p.at < 30 for p in first)
    kinds = {type(p.inject.fault) for p in first}
    assert kinds == {Kill, Hang, Partition, ToxicFault}
    kills = [p for p in first if isinstance(p.inject.fault, Kill)]
    assert len(kills) == 15  # every 2 s over 30 s
    assert {p.inject.fault.target.instance for p in kills} <= set(GUESTBOOK.instances())


def test_another_seed_gives_another_schedule_and_each_line_draws_on_its_own() -> None:
    s = scenario(MIXED)
    a, b = plan(s, 1, GUESTBOOK), plan(s, 2, GUESTBOOK)
    assert encoded(a) != encoded(b)
    # The fixed-time lines do not depend on the seed's draws for the random lines.
    fixed = [p.at for p in a if isinstance(p.inject.fault, (Partition, ToxicFault))]
    assert (
        fixed == [p.at for p in b if isinstance(p.inject.fault, (Partition, ToxicFault))] == [5.0, 10.0, 17.5]
    )
    # Lasting faults end with the method unless they say otherwise.
    hang = next(p for p in a if isinstance(p.inject.fault, Hang))
    assert hang.inject.fault.duration == 3
    partition = next(p for p in a if isinstance(p.inject.fault, Partition))
    assert partition.inject.fault.duration == pytest.approx(30 - partition.at)


def test_a_shorter_duration_keeps_the_start_of_the_schedule() -> None:
    s = scenario(MIXED)
    full, short = plan(s, 9, GUESTBOOK), plan(s, 9, GUESTBOOK, duration=10)
    kills = [p.inject for p in full if isinstance(p.inject.fault, Kill) and p.at < 10]
    assert kills == [p.inject for p in short if isinstance(p.inject.fault, Kill)]


def test_plan_on_the_command_line_is_stable_and_reads_the_topology_from_the_service() -> None:
    runner = CliRunner()
    args = ["chaos", "plan", str(EXAMPLES / "role-kills.toml"), "--seed", "7", "--json"]
    first, second = runner.invoke(main, args), runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    schedule = msgspec.json.decode(first.output)
    assert len(schedule) == 10
    assert {item["inject"]["fault"]["target"]["instance"] for item in schedule} <= set(GUESTBOOK.instances())


def test_the_journal_keeps_the_schedule_for_a_replay(tmp_path: Path) -> None:
    s = load_scenario(EXAMPLES / "role-kills.toml")
    schedule = plan(s, 3, GUESTBOOK)
    path = tmp_path / "journal.json"
    write_journal(
        path,
        Journal(
            scenario_file="role-kills.toml",
            scenario=s,
            seed=3,
            duration=s.duration,
            topology=GUESTBOOK,
            schedule=schedule,
        ),
    )
    again = read_journal(path)
    assert again.schedule == schedule and again.seed == 3 and again.scenario == s
    path.write_text("{}")
    with pytest.raises(ScenarioError, match="not a chaos journal"):
        read_journal(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('title = "x"\n[[method]]\nfault = "kill"\ntarget = "database"', "target must be one of"),
        (
            'title = "x"\n[[method]]\nfault = "kill"\ntarget = "role-host"\nevery = 1\nrate = 2',
            "one of at, every and rate",
        ),
        ('title = "x"\n[[method]]\nfault = "toxic"\ntoxic = { type = "gremlin" }', "type is latency"),
        ('title = "x"\n[[method]]\nfault = "explode"', "Invalid enum value .explode."),
        ('title = "x"\nduration = 5\nunknown = 1', "unknown"),
        ("title = ", "not valid TOML"),
    ],
)
def test_a_wrong_scenario_is_refused_with_a_message_naming_it(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario(text)


def test_a_role_the_service_lacks_is_refused_when_planning() -> None:
    s = scenario('title = "x"\n[[method]]\nfault = "kill"\ntarget = "role-host"\nroles = ["Db"]\nevery = 1')
    with pytest.raises(ScenarioError, match="no role Db"):
        plan(s, 1, GUESTBOOK)


LOSSY = """
title = "lossy"
duration = 20

[[method]]
fault = "link"
target = "guest"
role = "Worker"
every = 5
link = { drop = 0.3, delay = 0.05, jitter = 0.05 }
"""


def test_link_faults_carry_a_seed_of_their_own_drawn_from_the_run_seed() -> None:
    """So a seeded run drops the same frames again, and the times and targets stay as they were."""
    s = scenario(LOSSY)
    first, again, other = plan(s, 7, GUESTBOOK), plan(s, 7, GUESTBOOK), plan(s, 8, GUESTBOOK)
    seeds = [p.inject.fault.seed for p in first if isinstance(p.inject.fault, LinkFault)]
    assert len(seeds) == 4 and None not in seeds and len(set(seeds)) == 4
    assert seeds == [p.inject.fault.seed for p in again if isinstance(p.inject.fault, LinkFault)]
    assert seeds != [p.inject.fault.seed for p in other if isinstance(p.inject.fault, LinkFault)]
    unseeded = [msgspec.structs.replace(p.inject.fault, seed=None) for p in first]
    assert unseeded[0].drop == 0.3 and unseeded[0].target.instance in {"Worker_IN_0", "Worker_IN_1"}


def test_plan_lists_the_control_plane_faults_a_run_would_apply(tmp_path: Path) -> None:
    """`fabric chaos plan` shows a replica-kill line too, numbered after the controller's faults
    as the run's journal numbers it (it used to leave such lines out)."""
    path = tmp_path / "s.toml"
    path.write_text(
        'title = "both"\nduration = 6\n'
        '[[method]]\nfault = "kill"\ntarget = "role-host"\nroles = ["Web"]\nevery = 2.0\n'
        '[[method]]\nfault = "replica-kill"\nreplica = "leader"\nat = 3.0\n'
        '[[method]]\nfault = "replica-hang"\nreplica = "follower"\nat = 1.0\nduration = 2\n'
    )
    args = ["chaos", "plan", str(path), "--seed", "5", "--topology", "Web=2"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "both: seed 5, 5 faults over 6 s"
    assert lines[4:] == [
        "    4  t=  1.000  replica-hang replica follower  (2.00 s)",
        "    5  t=  3.000  replica-kill replica leader",
    ]
    as_json = msgspec.json.decode(CliRunner().invoke(main, [*args, "--json"]).output)
    assert [item["n"] for item in as_json] == [1, 2, 3, 4, 5] and as_json[4]["fault"][
        "kind"
    ] == "replica-kill"
