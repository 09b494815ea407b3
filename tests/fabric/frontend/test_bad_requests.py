"""Every kind of bad request gets its 4xx and Service Management error code, and changes nothing."""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.fabric.frontend.frontend_kit import TEST_BODY_LIMIT, Api
from tests.fabric.frontend.test_api import error_of

Send = Callable[[Api, bytes, Path], Awaitable[httpx.Response]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def config_of(hello: Path, old: bytes, new: bytes) -> str:
    return b64((hello / "ServiceConfiguration.Local.cscfg").read_bytes().replace(old, new))


# Each case: what is sent (after a hosted service "hello" with deployment "d1" exists), and the
# status and code expected back.
CASES: dict[str, tuple[Send, int, str]] = {
    "unknown route": (lambda a, p, h: a.http.get(f"{a.services}/hello/nothing"), 404, "ResourceNotFound"),
    "unknown path root": (lambda a, p, h: a.http.post("/admin", json={}), 404, "ResourceNotFound"),
    "wrong method": (lambda a, p, h: a.http.put(a.slot(), json={}), 405, "UnsupportedHttpVerb"),
    "unknown subscription": (
        lambda a, p, h: a.http.get("/subscriptions/0000/services/hostedservices"),
        404,
        "ResourceNotFound",
    ),
    "unknown hosted service": (
        lambda a, p, h: a.deploy(p, service="nope", name="x"),
        404,
        "ResourceNotFound",
    ),
    "bad slot": (lambda a, p, h: a.deploy(p, slot="canary", name="x"), 400, "BadRequest"),
    "unknown comp": (
        lambda a, p, h: a.http.post(a.slot(), params={"comp": "explode"}, json={}),
        400,
        "InvalidQueryParameterValue",
    ),
    "comp on a route without comps": (
        lambda a, p, h: a.http.get(a.services, params={"comp": "config"}),
        400,
        "InvalidQueryParameterValue",
    ),
    "instance action without comp": (
        lambda a, p, h: a.http.post(f"{a.slot()}/roleinstances/Hello_IN_0"),
        400,
        "InvalidQueryParameterValue",
    ),
    "malformed JSON": (
        lambda a, p, h: a.http.post(a.services, content=b"{not json"),
        400,
        "InvalidJsonRequest",
    ),
    "empty body": (lambda a, p, h: a.http.post(a.services), 400, "InvalidJsonRequest"),
    "unknown field": (lambda a, p, h: a.create_service("x1", Colour="red"), 400, "InvalidJsonRequest"),
    "bad service name": (lambda a, p, h: a.create_service("no spaces"), 400, "InvalidJsonRequest"),
    "package not base64": (
        lambda a, p, h: a.http.post(a.slot(slot="staging"), json={"Name": "x", "Package": "%%%"}),
        400,
        "InvalidJsonRequest",
    ),
    "package not a zip": (
        lambda a, p, h: a.deploy(b"hello, I am not a zip", slot="staging", name="x"),
        400,
        "InvalidPackage",
    ),
    "zip that is not a package": (
        lambda a, p, h: a.deploy(zip_of({"readme.txt": b"hi"}), slot="staging", name="x"),
        400,
        "InvalidPackage",
    ),
    "configuration that does not validate": (
        lambda a, p, h: a.deploy(
            p, slot="staging", name="x", Configuration=config_of(h, b'Role name="Hello"', b'Role name="Nope"')
        ),
        400,
        "InvalidConfiguration",
    ),
    "configuration that is not XML": (
        lambda a, p, h: a.deploy(p, slot="staging", name="x", Configuration=b64(b"<oops")),
        400,
        "InvalidConfiguration",
    ),
    "configuration with a bad file name": (
        lambda a, p, h: a.deploy(
            p, slot="staging", name="x", Configuration=b64(b"x"), ConfigurationName="cfg.ini"
        ),
        400,
        "InvalidConfiguration",
    ),
    "changed configuration that does not fit the definition": (
        lambda a, p, h: a.http.post(
            a.slot(),
            params={"comp": "config"},
            json={"Configuration": config_of(h, b'name="Greeting"', b'name="Unknown"')},
        ),
        400,
        "InvalidConfiguration",
    ),
    "upgrade with a package that is not a zip": (
        lambda a, p, h: a.http.post(a.slot(), params={"comp": "upgrade"}, json={"Package": b64(b"nope")}),
        400,
        "InvalidPackage",
    ),
    "body over the limit": (
        lambda a, p, h: a.deploy(p + b"\0" * TEST_BODY_LIMIT, slot="staging", name="x"),
        413,
        "RequestBodyTooLarge",
    ),
    "bad upgrade mode": (
        lambda a, p, h: a.http.post(
            a.slot(), params={"comp": "upgrade"}, json={"Package": b64(p), "Mode": "Fast"}
        ),
        400,
        "InvalidJsonRequest",
    ),
    "bad status": (
        lambda a, p, h: a.http.post(a.slot(), params={"comp": "status"}, json={"Status": "Paused"}),
        400,
        "InvalidJsonRequest",
    ),
    "negative update domain": (
        lambda a, p, h: a.http.post(
            a.slot(), params={"comp": "walkupgradedomain"}, json={"UpgradeDomain": -1}
        ),
        400,
        "InvalidJsonRequest",
    ),
    "slot already taken": (lambda a, p, h: a.deploy(p, name="again"), 409, "ConflictError"),
    "deployment name taken by the other slot": (
        lambda a, p, h: a.deploy(p, slot="staging"),
        409,
        "ConflictError",
    ),
    "hosted service exists": (lambda a, p, h: a.create_service("hello"), 409, "ConflictError"),
    "location and affinity group": (
        lambda a, p, h: a.create_service("x2", Location="Local", AffinityGroup="g"),
        400,
        "BadRequest",
    ),
    "unknown location": (lambda a, p, h: a.create_service("x3", Location="Mars"), 400, "BadRequest"),
    "hosted service with deployments deleted": (
        lambda a, p, h: a.http.delete(f"{a.services}/hello"),
        409,
        "ConflictError",
    ),
    "swap naming the wrong production": (
        lambda a, p, h: a.http.post(f"{a.services}/hello", json={"Production": "other"}),
        400,
        "BadRequest",
    ),
    "unknown instance (the controller refuses)": (
        lambda a, p, h: a.http.post(f"{a.slot()}/roleinstances/Nope_IN_9", params={"comp": "reboot"}),
        404,
        "ResourceNotFound",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_request(api: Api, hello_package: bytes, hello: Path, case: str) -> None:
    send, status, code = CASES[case]
    await api.create_service()
    assert (await api.deploy(hello_package)).status_code == 202
    before_store = (api.state / "rdfe.json").read_bytes()
    before_mutations = list(api.mutations())
    before_packages = sorted((api.state / "packages").rglob("*"))
    before_view = (await api.http.get(api.slot())).json()

    resp = await send(api, hello_package, hello)

    assert error_of(resp) == (status, code), resp.text
    assert resp.headers["x-ms-request-id"]
    assert (api.state / "rdfe.json").read_bytes() == before_store
    changed = api.mutations()[len(before_mutations) :]
    # Only the instance action reaches the controller, which refuses it without changing anything.
    assert changed == [] or case.startswith("unknown instance")
    assert sorted((api.state / "packages").rglob("*")) == before_packages
    assert (await api.http.get(api.slot())).json() == before_view
