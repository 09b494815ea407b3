"""Every number a request carries is bounded: a hostile one is a 4xx with one line, and nothing
changes (no command reaches the controller, no package is kept, no record is written)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from fabric.model import build_package
from fabric.model._manifest import MANIFEST
from tests.fabric.frontend.frontend_kit import Api

SETTINGS = "<ConfigurationSettings>"
ROLE = '<WorkerRole name="Hello" vmsize="ExtraSmall">'
DEFINITION = "ServiceDefinition.csdef"
CONFIGURATION = "ServiceConfiguration.Local.cscfg"
COUNT = '<Instances count="2" />'

# (case, file, old, new, what the message says): numbers carried by the uploaded model
MODEL: list[tuple[str, str, str, str, str]] = [
    (
        "a billion instances",
        CONFIGURATION,
        COUNT,
        '<Instances count="1000000000" />',
        "over the limit of 1000",
    ),
    ("10**30 instances", CONFIGURATION, COUNT, f'<Instances count="{10**30}" />', "is too large"),
    ("negative instances", CONFIGURATION, COUNT, '<Instances count="-1" />', "out of range"),
    ("non-numeric instances", CONFIGURATION, COUNT, '<Instances count="many" />', "not a whole number"),
    (
        "upgrade domains",
        DEFINITION,
        'name="Hello" xmlns',
        'name="Hello" upgradeDomainCount="100000" xmlns',
        "from 1 to 20",
    ),
    (
        "LocalStorage size",
        DEFINITION,
        SETTINGS,
        f'<LocalResources><LocalStorage name="S" sizeInMB="{2**31 - 1}" /></LocalResources>{SETTINGS}',
        "MB of LocalStorage in all",
    ),
    (
        "port",
        DEFINITION,
        SETTINGS,
        f'<Endpoints><InputEndpoint name="E" protocol="tcp" port="{10**9}" /></Endpoints>{SETTINGS}',
        "65535",
    ),
    (
        "startup tasks",
        DEFINITION,
        ROLE,
        ROLE + "<Startup>" + '<Task commandLine="true" />' * 100 + "</Startup>",
        "100 startup tasks",
    ),
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(("case", "file", "old", "new", "said"), MODEL, ids=[c[0] for c in MODEL])
async def test_a_hostile_number_in_the_model_is_refused_with_one_line(
    api: Api, hello: Path, tmp_path: Path, case: str, file: str, old: str, new: str, said: str
) -> None:
    path = hello / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    if file == DEFINITION:  # the package carries it
        package = tmp_path / "bad.cspkg"
        (hello / DEFINITION).write_text(text)  # packed good, the bad definition swapped in below
        build_package(hello, package)
        (hello / DEFINITION).write_text(text.replace(old, new, 1))
        package = _repack(package, DEFINITION, (hello / DEFINITION).read_bytes())
        body: dict[str, Any] = {"Name": "d1", "Package": b64(package)}
    else:
        good = tmp_path / "good.cspkg"
        (hello / file).write_text(text)
        build_package(hello, good)
        body = {
            "Name": "d1",
            "Package": b64(good.read_bytes()),
            "Configuration": b64(text.replace(old, new, 1).encode()),
        }
    await api.create_service()
    before = (api.state / "rdfe.json").read_bytes()
    response = await api.http.post(api.slot(), json=body)
    assert 400 <= response.status_code < 500, response.text
    message = response.json()["Error"]["Message"]
    assert said in message and "\n" not in message, message
    assert api.mutations() == []
    assert (api.state / "rdfe.json").read_bytes() == before
    assert not any((api.state / "packages").rglob("*.cspkg"))


def _repack(package: Path, member: str, data: bytes) -> bytes:
    """The package with one member replaced and its manifest entry updated to match, as a hostile
    client that packs by hand would send it (``fabric package`` refuses such a definition)."""
    out = io.BytesIO()
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(out, "w") as dst:
        manifest = json.loads(src.read(MANIFEST))
        for entry in manifest["files"]:
            if entry["path"] == member:
                entry["sha256"], entry["size"] = hashlib.sha256(data).hexdigest(), len(data)
        for info in src.infolist():
            if info.filename == MANIFEST:
                dst.writestr(info, json.dumps(manifest))
            else:
                dst.writestr(info, data if info.filename == member else src.read(info.filename))
    return out.getvalue()


# (case, JSON body of walkupgradedomain): numbers carried by the API's own bodies
WALKS: list[tuple[str, Any]] = [
    ("negative", -1),
    ("past the last domain", 20),
    ("huge", 10**30),
    ("a string", "3"),
    ("a fraction", 1.5),
]


@pytest.mark.parametrize(("case", "domain"), WALKS, ids=[w[0] for w in WALKS])
async def test_a_hostile_upgrade_domain_is_refused(
    api: Api, hello_package: bytes, case: str, domain: Any
) -> None:
    await api.create_service()
    assert (await api.deploy(hello_package)).status_code == 202
    before = list(api.mutations())
    response = await api.http.post(
        api.slot(), params={"comp": "walkupgradedomain"}, json={"UpgradeDomain": domain}
    )
    assert response.status_code == 400, response.text
    assert "\n" not in response.json()["Error"]["Message"]
    assert api.mutations() == before


@pytest.mark.parametrize("length", ["9" * 5000, "99999999999999999999", "-5", "ten"])
async def test_a_hostile_content_length_is_refused(api: Api, length: str) -> None:
    await api.create_service()
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    head = (
        f"POST {api.slot()}?comp=status HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {api.token}\r\nContent-Length: {length}\r\n\r\n"
    )
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(head.encode() + b'{"Status": "Running"}')
            answer = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                while b"\r\n" not in answer:
                    answer += await stream.receive()
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else 400  # (closed: refused)
    assert 400 <= status < 500, answer[:200]
    assert api.mutations() == []
    assert (await api.http.get(api.services)).status_code == 200  # the API still serves


KILL = {"type": "kill", "target": {"place": "role-host", "instance": "Hello_IN_0"}}
# (case, path under /chaos, JSON body): the chaos API's numbers
CHAOS: list[tuple[str, str, dict[str, Any]]] = [
    ("negative duration", "faults", {"fault": {"type": "hang", "target": KILL["target"], "duration": -1}}),
    ("a year-long hang", "faults", {"fault": {"type": "hang", "target": KILL["target"], "duration": 3.2e7}}),
    (
        "a drop probability over 1",
        "faults",
        {"fault": {"type": "link", "target": KILL["target"], "drop": 2.0}},
    ),
    (
        "a storm of a million changes",
        "faults",
        {"fault": {"type": "storm", "target": {"role": "Hello"}, "count": 10**6}},
    ),
    ("no storm at all", "faults", {"fault": {"type": "storm", "target": {"role": "Hello"}, "count": 0}}),
    (
        "a fill past a terabyte",
        "faults",
        {"fault": {"type": "fill", "target": KILL["target"], "extra_mb": 10**12}},
    ),
    ("a watch that never ends", "watches", {"lease": 1e12}),
    ("a watch that is already over", "watches", {"lease": 0}),
]


@pytest.mark.parametrize(("case", "path", "body"), CHAOS, ids=[c[0] for c in CHAOS])
async def test_a_hostile_number_in_a_chaos_request_is_refused(
    api: Api, case: str, path: str, body: dict[str, Any]
) -> None:
    response = await api.http.post(f"/chaos/{path}", json=body)
    assert response.status_code == 400, response.text
    assert "\n" not in response.json()["Error"]["Message"]
    assert api.mutations() == []


async def test_a_huge_location_is_refused_in_one_short_line(api: Api) -> None:
    response = await api.http.post(api.services, json={"ServiceName": "far", "Location": "x" * 100_000})
    assert response.status_code == 400, response.text
    assert len(response.json()["Error"]["Message"]) < 300
    response = await api.http.post(f"{api.services}/far", json={"Production": "p" * 100_000})
    assert 400 <= response.status_code < 500 and len(response.json()["Error"]["Message"]) < 300
