"""A joined host that reports VMs it does not own gets them stopped (a stale VM after a heal),
but never more at once than a small bound: a hostile host naming a hundred thousand VMs in one
heartbeat made the controller start a task (and a StopGuest ask) for each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from fabric.controller import host_reach, joined
from fabric.controller.joined import MAX_STALE_STOPS, on_report
from fabric.guest.messages import InstanceStatus
from fabric.host.messages import HostHeartbeat
from fabric.host.remote import JoinedReport


@dataclass
class StandInHost:
    id: str = "h1"
    address: str = "127.0.0.9"
    stopping: set[str] = field(default_factory=set)


@dataclass
class StandInHosts:
    host: StandInHost

    def heard_joined(self, beat: HostHeartbeat, agent: object, at: float) -> tuple[StandInHost, None, bool]:
        return self.host, None, False


@dataclass
class StandInState:
    hosts: StandInHosts

    def instances(self) -> list[Any]:
        return []  # the host owns nothing here


async def test_a_flood_of_unknown_vms_is_stopped_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_reach, "heard", lambda state, host: None)
    host = StandInHost()
    state = StandInState(StandInHosts(host))
    ready = InstanceStatus(status="ReadyRole")
    beat = HostHeartbeat(
        host_id="h1", instances={f"x.y.R_IN_{n}": ready for n in range(100_000)}, address="127.0.0.9", cores=2
    )
    spawned: list[tuple[Any, ...]] = []
    await on_report(
        cast(Any, state), JoinedReport(heartbeat=beat, agent=None, at=0.0), lambda *a: spawned.append(a)
    )
    assert len(spawned) == MAX_STALE_STOPS
    assert len(host.stopping) == len(spawned)
    assert all(task[0] is joined._stop_stale for task in spawned)
