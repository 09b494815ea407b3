"""fabric-hosts, the controller's reports actor for joined hosts: only a linked host is heard,
and only with the key the relay gave it over its own link, so no host reports for another."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from fabric.cluster.port import KEY_GRACE, HostRelay
from fabric.guest.messages import InstanceStatus
from fabric.host.messages import (
    HostHeartbeat,
    InstanceStatusChanged,
    InstanceStatusesChanged,
    ReportKey,
    StatusChange,
)
from fabric.host.remote import JoinedReport
from fabric.settings import Settings


@dataclass
class Inbox:
    """Stands in for a Ref: what was told to it."""

    told: list[object] = field(default_factory=list)

    async def tell(self, message: object) -> None:
        self.told.append(message)

    def tell_nowait(self, message: object) -> None:
        self.told.append(message)


@dataclass
class FakePeer:
    connected: bool = True
    agent: Inbox = field(default_factory=Inbox)

    def ref(self, name: str) -> Inbox:
        assert name == "agent"
        return self.agent


@dataclass
class FakeListener:
    peers: dict[str, FakePeer]


def beat(host: str, key: str = "") -> HostHeartbeat:
    return HostHeartbeat(host_id=host, instances={}, address="127.0.0.9", cores=2, boot="b", key=key)


async def test_reports_need_the_key_given_over_the_hosts_own_link() -> None:
    controller = Inbox()
    h1, h2 = FakePeer(), FakePeer()
    listener = FakeListener({"h1": h1, "h2": h2, "gone": FakePeer(connected=False)})
    relay = HostRelay(cast(Any, controller), cast(Any, listener), Settings.fast())

    await relay.receive(beat("h1"))  # no key yet: dropped, and the key goes to h1 alone
    assert controller.told == []
    (sent,) = h1.agent.told
    assert isinstance(sent, ReportKey) and sent.key and h2.agent.told == []

    await relay.receive(beat("h1", sent.key))
    (report,) = controller.told
    assert isinstance(report, JoinedReport) and report.heartbeat.host_id == "h1"

    # h2 (a linked host, with a key of its own) cannot report for h1, nor with a guess.
    await relay.receive(beat("h2"))
    (h2_key,) = [m for m in h2.agent.told if isinstance(m, ReportKey)]
    assert h2_key.key != sent.key
    for forged in (beat("h1", h2_key.key), beat("h1", "0" * 32)):
        await relay.receive(forged)
    status = InstanceStatus(status="ReadyRole")
    await relay.receive(InstanceStatusChanged(host_id="h1", instance_id="x", status=status, key=h2_key.key))
    assert len(controller.told) == 1
    await relay.receive(InstanceStatusChanged(host_id="h1", instance_id="x", status=status, key=sent.key))
    assert len(controller.told) == 2
    # The same for the steps of a boot sent together.
    steps = [StatusChange(instance_id="x", status=InstanceStatus(status="CreatingVM"))]
    await relay.receive(InstanceStatusesChanged(host_id="h1", changes=steps, key=h2_key.key))
    assert len(controller.told) == 2
    await relay.receive(InstanceStatusesChanged(host_id="h1", changes=steps, key=sent.key))
    assert len(controller.told) == 3 and isinstance(controller.told[-1], InstanceStatusesChanged)

    # A host whose link is down is not heard; anything but a report is dropped.
    await relay.receive(beat("gone", "k"))
    await relay.receive(ReportKey("x"))
    assert len(controller.told) == 3


async def test_a_linked_host_without_its_key_yet_is_quiet_a_stray_host_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a failover every host reports with the last leader's key until the new one's
    arrives: that is expected (a debug line), not a warning per host; a host that is not linked
    stays visible, and so does a linked one still without its key after the grace."""
    h1 = FakePeer()
    relay = HostRelay(cast(Any, Inbox()), cast(Any, FakeListener({"h1": h1})), Settings.fast())
    with caplog.at_level(logging.DEBUG, logger="fabric.cluster"):
        await relay.receive(beat("h1", "the-last-leaders-key"))
        await relay.receive(beat("h1"))
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert any("without its key yet" in r.getMessage() for r in caplog.records)

        await relay.receive(beat("stray", "k"))
        (stray,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "dropped a HostHeartbeat (not from a linked host" in stray.getMessage()

        relay._unkeyed_since["h1"] -= KEY_GRACE + 1  # still no key after the grace
        for _ in range(2):
            await relay.receive(beat("h1", "still-wrong"))
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warned[1:] == ["fabric-hosts dropped the reports of host 'h1': not with the key it was given"]
