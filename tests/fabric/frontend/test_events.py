"""The event timeline: recorded by the real controller, read through the API and `fabric events`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from fabric.commands.events import read_events
from fabric.controller.events import EventLog, ListEvents
from tests.fabric.frontend.real_fabric_kit import RealFabric, open_real_fabric
from tests.fabric.frontend.test_cli import cli


@pytest.fixture
async def fabric(tmp_path: Path, hello: Path) -> AsyncIterator[RealFabric]:
    """A real controller behind the API, with the Hello service deployed (2 instances)."""
    async with open_real_fabric(tmp_path / "state") as served:
        code, _, err = await cli("deploy", str(hello), *served.cli_state)
        assert code == 0, err
        yield served


def vm_of(fabric: RealFabric, instance: str) -> str:
    return next(vm for vm in fabric.world.running() if vm.endswith("." + instance))


async def test_the_timeline_holds_the_deployment_and_each_status_change(fabric: RealFabric) -> None:
    page = (await fabric.http.get("/events", params={"limit": "1000"})).json()
    messages = [e["message"] for e in page["events"]]
    assert "CreateDeployment started" in messages
    assert any(m.startswith("CreateDeployment Succeeded") for m in messages)
    ready = [e for e in page["events"] if e["kind"] == "status" and e["status"] == "ReadyRole"]
    assert sorted(e["instance"] for e in ready) == ["Hello_IN_0", "Hello_IN_1"]
    assert all(e["service"] == "hello" and e["role"] == "Hello" and e["host"] for e in ready)
    seqs = [e["seq"] for e in page["events"]]
    assert seqs == sorted(seqs) and page["next"] == seqs[-1]

    only = (await fabric.http.get("/events", params={"instance": "hello_in_1"})).json()["events"]
    assert only and {e["instance"] for e in only} == {"Hello_IN_1"}
    none = (await fabric.http.get("/events", params={"service": "other"})).json()["events"]
    assert none == []


async def test_a_long_poll_answers_as_soon_as_the_next_event_happens(fabric: RealFabric) -> None:
    last = (await fabric.http.get("/events", params={"limit": "1000"})).json()["next"]
    answer: dict[str, object] = {}

    async def poll() -> None:
        resp = await fabric.http.get("/events", params={"after": str(last), "wait": "30"})
        answer.update(resp.json())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            await fabric.report(vm_of(fabric, "Hello_IN_0"), "RestartingRole", restarts=1)
    kinds = [(e["kind"], e["instance"]) for e in answer["events"]]  # type: ignore[attr-defined]
    assert ("heal", "Hello_IN_0") in kinds and ("status", "Hello_IN_0") in kinds


async def test_the_stream_sends_new_events_as_server_sent_events(fabric: RealFabric) -> None:
    last = (await fabric.http.get("/events", params={"limit": "1000"})).json()["next"]
    with anyio.fail_after(10):
        async with fabric.http.stream(
            "GET", "/events/stream", params={"instance": "Hello_IN_1"}, headers={"last-event-id": str(last)}
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.aiter_lines()
            assert [await anext(lines), await anext(lines)] == [": stream open", ""]
            await fabric.report(vm_of(fabric, "Hello_IN_0"), "BusyRole")  # filtered out
            await fabric.report(vm_of(fabric, "Hello_IN_1"), "BusyRole")
            got = [await anext(lines) for _ in range(4)]
    assert got[1] == "event: status" and got[3] == ""
    event = json.loads(got[2].removeprefix("data: "))
    assert got[0] == f"id: {event['seq']}" and event["seq"] > last + 1
    assert (event["instance"], event["status"]) == ("Hello_IN_1", "BusyRole")


async def test_a_stream_can_start_from_the_last_events(fabric: RealFabric) -> None:
    last = (await fabric.http.get("/events", params={"limit": "1000"})).json()["next"]
    with anyio.fail_after(10):
        async with fabric.http.stream("GET", "/events/stream", params={"tail": "2"}) as resp:
            ids = []
            async for line in resp.aiter_lines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                if len(ids) == 2:
                    break
    assert ids == [last - 1, last]


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ({"limit": "0"}, "limit must be a whole number from 1 to 1000"),
        ({"limit": "100000"}, "limit must be a whole number from 1 to 1000"),
        ({"wait": "61"}, "wait must be a whole number from 0 to 60"),
        ({"after": "-1"}, "after must be a whole number"),
        ({"kind": "gossip"}, "kind must be one of"),
    ],
)
async def test_out_of_range_queries_are_refused(
    fabric: RealFabric, query: dict[str, str], needle: str
) -> None:
    resp = await fabric.http.get("/events", params=query)
    assert resp.status_code == 400 and needle in resp.json()["Error"]["Message"]


async def test_events_need_the_token(fabric: RealFabric) -> None:
    assert (await fabric.http.get("/events", headers={"authorization": "Bearer nope"})).status_code == 401
    assert (await fabric.http.get("/events/stream", headers={"authorization": ""})).status_code == 401


async def test_fabric_events_prints_the_timeline_and_follows_it(fabric: RealFabric) -> None:
    code, out, err = await cli("events", "--json", "--service", "hello", *fabric.cli_state)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert {e["service"] for e in events} == {"hello"} and any(e["status"] == "ReadyRole" for e in events)
    code, out, _ = await cli("events", "--instance", "Hello_IN_0", *fabric.cli_state)
    assert code == 0 and "Hello_IN_0 is ReadyRole" in out and "Hello_IN_1" not in out
    code, _, err = await cli("events", "--kind", "gossip", *fabric.cli_state)
    assert code == 2 and "gossip" in err
    code, _, err = await cli("events", "--state-dir", str(fabric.state / "nowhere"))
    assert code == 2 and err.startswith("error: no fabric is running for state folder")

    last = events[-1]["seq"]

    def follow() -> str:
        for event in read_events(fabric.state, {"instance": "Hello_IN_1"}, after=last, follow=True):
            return event.message
        return ""

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                message.append(await anyio.to_thread.run_sync(follow))

            message: list[str] = []
            tg.start_soon(run)
            await anyio.sleep(0.2)  # let the long poll start (the answer is the same either way)
            await fabric.report(vm_of(fabric, "Hello_IN_1"), "BusyRole")
    assert message == ["Hello_IN_1 is BusyRole"]


def test_the_ring_keeps_the_last_events_and_says_where_it_starts() -> None:
    log = EventLog(kept=3)

    async def main() -> None:
        for n in range(5):
            log.record("status", f"e{n}", instance=f"I{n % 2}")

    anyio.run(main, backend="trio")
    page = log.page(ListEvents())
    assert [e.message for e in page.events] == ["e2", "e3", "e4"] and page.first == 3 and page.next == 5
    assert [e.message for e in log.page(ListEvents(after=3, limit=1)).events] == ["e3"]
    assert [e.message for e in log.page(ListEvents(instance="i1")).events] == ["e3"]
    assert log.totals["status"] == 5


async def test_live_streams_are_bounded(fabric: RealFabric, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fabric.frontend.streams.MAX_STREAMS", 2)
    stream = partial(fabric.http.stream, "GET", "/events/stream")
    with anyio.fail_after(10):
        async with stream() as first, stream() as second:
            assert first.status_code == second.status_code == 200
            third = await fabric.http.get("/events/stream")
            assert third.status_code == 503 and "2 live streams" in third.json()["Error"]["Message"]
        # Both closed: their slots come free once the server sees the disconnects.
        while True:
            async with stream() as fourth:
                if fourth.status_code == 200:
                    break
            await anyio.sleep(0.05)
