"""The portal is live: time from a status change in the fabric to the browser's DOM showing it
(goal: under 200 ms), beside a raw baseline measured in the same run: the same events read by a
plain server-sent-events client (httpx) in this process.

Usage: .venv/bin/python benchmarks/portal.py [--rounds 4]

The guestbook runs on a fast-profile fabric; each round kills one role host through the chaos
API and waits until every instance is ReadyRole again. Each status event's time is the one the
controller recorded (``Event.at``); the browser (Debian's chromium driven by Playwright in a
child process, tests/fabric/portal/browser.py) stamps each status cell it adds with Date.now()
(the same system clock), and the baseline client stamps each event as it is read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from fabric.server import open_fabric  # noqa: E402
from fabric.settings import Settings  # noqa: E402
from tests.fabric.portal.portal_kit import GUESTBOOK, browser_missing, fabric_cli  # noqa: E402

INSTANCES = ("Web_IN_0", "Worker_IN_0", "Web_IN_1", "Worker_IN_1")


def ms(at: str) -> float:
    """Milliseconds since the epoch of an ISO time."""
    return dt.datetime.fromisoformat(at).timestamp() * 1000


def sse_client(url: str, token: str, after: int) -> None:
    """The raw baseline, run as a child process like the browser: read /events/stream from
    ``after`` with a plain blocking client, print ``<seq> <ms since the epoch>`` per event."""
    headers = {"authorization": f"Bearer {token}"}
    with httpx.stream(
        "GET", f"{url}/events/stream", params={"after": str(after)}, headers=headers, timeout=None
    ) as resp:
        print("ready", flush=True)
        for line in resp.iter_lines():
            if line.startswith("id: "):
                print(line[4:], dt.datetime.now(dt.UTC).timestamp() * 1000, flush=True)


async def newest(http: httpx.AsyncClient) -> int:
    """The seq of the newest event."""
    after = 0
    while True:
        page = (await http.get("/events", params={"after": str(after), "limit": "1000"})).json()
        if not page["events"]:
            return int(page["next"])
        after = page["next"]


async def all_ready(http: httpx.AsyncClient, sub: str, service: str) -> None:
    """Wait (long polls of the timeline, no busy loop) until every instance is ReadyRole."""
    path = f"/subscriptions/{sub}/services/hostedservices/{service}/deploymentslots/production"
    after = 0
    with anyio.fail_after(120):
        while True:
            view = (await http.get(path)).json()
            if view["instances"] and all(i["status"] == "ReadyRole" for i in view["instances"]):
                return
            page = (await http.get("/events", params={"after": str(after), "wait": "10"})).json()
            after = page["next"]


async def main(rounds: int) -> None:
    missing = browser_missing()
    if missing:
        print(f"skipped: {missing}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "browser"
        out.mkdir()
        async with open_fabric(Path(tmp) / "state", Settings.fast()) as fabric:
            state = ("--state-dir", str(fabric.state_dir))
            await fabric_cli("deploy", str(GUESTBOOK), *state)
            token = (fabric.state_dir / "token").read_text().strip()
            headers = {"authorization": f"Bearer {token}"}
            try:
                async with (
                    httpx.AsyncClient(base_url=fabric.url, headers=headers, timeout=60) as http,
                    await anyio.open_process(
                        [
                            sys.executable,
                            "-m",
                            "tests.fabric.portal.browser",
                            "latency",
                            fabric.url,
                            token,
                            str(out),
                        ],
                        cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": str(ROOT)},
                        stdin=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ) as browser,
                ):
                    assert browser.stdout is not None
                    lines = _lines(browser.stdout)
                    assert json.loads(await anext(lines)) == {"ready": True}
                    start = await newest(http)
                    client = await anyio.open_process(
                        [sys.executable, __file__, "--sse-client", fabric.url, token, str(start)],
                        stdin=subprocess.DEVNULL,
                    )
                    assert client.stdout is not None
                    client_lines = _lines(client.stdout)
                    assert await anext(client_lines) == "ready"
                    sub = (await http.get("/subscriptions")).json()["Subscriptions"][0]["SubscriptionId"]
                    service = "guestbook"
                    await all_ready(http, sub, service)
                    for n in range(rounds):
                        instance = INSTANCES[n % len(INSTANCES)]
                        fault = {
                            "type": "kill",
                            "target": {"service": service, "place": "role-host", "instance": instance},
                        }
                        resp = await http.post("/chaos/faults", json={"fault": fault})
                        assert resp.status_code == 200, resp.text
                        await all_ready(http, sub, service)
                    (out / "stop").touch()
                    dom = json.loads(await anext(lines))["dom"]
                    events = (await http.get("/events", params={"after": str(start), "limit": "1000"})).json()
                    client.terminate()
                    received = {}
                    async for line in client_lines:
                        seq, when = line.split()
                        received[int(seq)] = float(when)
                    await client.aclose()
                    baseline = [
                        (e, received[e["seq"]])
                        for e in events["events"]
                        if e["kind"] == "status" and e["seq"] in received
                    ]
            finally:
                with anyio.move_on_after(120, shield=True):
                    await fabric_cli("delete", *state)
    report(baseline, dom)


async def _lines(stream: Any) -> Any:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode()


def report(baseline: list[tuple[dict[str, Any], float]], dom: list[list[Any]]) -> None:
    """Print the figures: per status change, fabric -> SSE client and fabric -> browser DOM."""
    raw, browser = [], []
    used: set[int] = set()
    for event, received in baseline:
        at = ms(event["at"])
        raw.append(received - at)
        for i, (instance, status, shown) in enumerate(dom):
            if (
                i not in used
                and instance == event["instance"]
                and status == event["status"]
                and shown >= at - 1
            ):
                used.add(i)
                browser.append(shown - at)
                break
    print(f"status changes: {len(baseline)}, shown in the browser: {len(browser)}")
    for name, values in (("SSE client (raw baseline)", raw), ("browser DOM (portal)", browser)):
        if values:
            print(
                f"  fabric -> {name:<26} median {statistics.median(values):6.1f} ms  "
                f"p90 {sorted(values)[int(0.9 * (len(values) - 1))]:6.1f} ms  max {max(values):6.1f} ms"
            )
    if browser and raw:
        print(
            f"  the browser adds {statistics.median(browser) - statistics.median(raw):.1f} ms (median) to the raw "
            f"stream; goal: under 200 ms from the fabric to the DOM -> "
            f"{'met' if statistics.median(browser) < 200 else 'NOT met'}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sse-client", nargs=3, metavar=("URL", "TOKEN", "AFTER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sse_client:
        sse_client(args.sse_client[0], args.sse_client[1], int(args.sse_client[2]))
    else:
        anyio.run(main, args.rounds, backend="trio")
