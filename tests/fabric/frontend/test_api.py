"""The HTTP API served by hypercorn on 127.0.0.1, with a stand-in controller behind FFE."""

from __future__ import annotations

import base64
import os
import stat

import httpx
import pytest

from fabric.controller.messages import (
    ChangeConfiguration,
    CreateDeployment,
    DeleteDeployment,
    InstanceAction,
    SetDeploymentStatus,
    SwapDeployments,
    UpgradeDeployment,
    WalkUpgradeDomain,
)
from tests.fabric.frontend.frontend_kit import Api, open_api
from tests.fabric.frontend.frontend_standin import Finish


def error_of(resp: httpx.Response) -> tuple[int, str]:
    """The status and the Service Management error code of a refused request."""
    body = resp.json()
    assert set(body) == {"Error"} and set(body["Error"]) == {"Code", "Message"}, body
    assert body["Error"]["Message"]
    return resp.status_code, body["Error"]["Code"]


async def test_token_and_api_files(api: Api) -> None:
    token = api.state / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert (api.state / "api").read_text().strip() == api.url
    assert api.url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic abc", "Bearer"])
async def test_requests_without_the_token_get_401_and_change_nothing(
    api: Api, hello_package: bytes, header: str | None
) -> None:
    before = (api.state / "rdfe.json").read_bytes()
    headers = {} if header is None else {"authorization": header}
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as anonymous:
        created = await anonymous.post(api.services, json={"ServiceName": "sneaky"})
        deployed = await anonymous.post(
            api.slot(), json={"Name": "d", "Package": base64.b64encode(hello_package).decode()}
        )
        listed = await anonymous.get("/subscriptions")
        nowhere = await anonymous.get("/no/such/route")
    for resp in (created, deployed, listed, nowhere):
        assert error_of(resp) == (401, "AuthenticationFailed")
        assert resp.headers["www-authenticate"] == "Bearer"
    assert (api.state / "rdfe.json").read_bytes() == before
    assert api.controller.received == []
    assert (await api.http.get(api.services)).json()["HostedServices"] == []


async def test_hosted_service_lifecycle(api: Api) -> None:
    created = await api.create_service("Hello", Label="my app", Description="d")
    assert created.status_code == 201
    assert created.json()["ServiceName"] == "hello"  # DNS names are case-insensitive
    assert created.headers["location"].endswith("/hostedservices/hello")
    listed = (await api.http.get(api.services)).json()["HostedServices"]
    assert [h["ServiceName"] for h in listed] == ["hello"]
    updated = await api.http.put(f"{api.services}/hello", json={"Label": "renamed"})
    assert updated.json()["HostedServiceProperties"]["Label"] == "renamed"
    got = await api.http.get(f"{api.services}/HELLO", params={"embed-detail": "true"})
    assert got.json()["HostedServiceProperties"]["Description"] == "d"
    assert got.json()["Deployments"] == []
    sub = (await api.http.get(f"/subscriptions/{api.subscription}")).json()
    assert sub["CurrentHostedServices"] == 1
    assert (await api.http.delete(f"{api.services}/hello")).status_code == 200
    assert error_of(await api.http.get(f"{api.services}/hello")) == (404, "ResourceNotFound")


async def test_locations_list_the_pools(api: Api) -> None:
    body = (await api.http.get(f"/subscriptions/{api.subscription}/locations")).json()
    assert body["Locations"] == [
        {"Name": "Local", "DisplayName": "Local", "AvailableServices": ["Compute"], "Pools": ["local"]}
    ]


async def test_deploy_answers_202_and_the_operation_succeeds(api: Api, hello_package: bytes) -> None:
    await api.create_service()
    resp = await api.deploy(hello_package, Label="first")
    assert resp.status_code == 202
    request_id = resp.headers["x-ms-request-id"]
    op = (await api.http.get(f"/subscriptions/{api.subscription}/operations/{request_id}")).json()
    assert op == {"Id": request_id, "Status": "Succeeded", "HttpStatusCode": 200, "Error": None}
    view = (await api.http.get(api.slot())).json()
    assert view["name"] == "d1" and view["label"] == "first" and view["status"] == "Running"
    assert [i["id"] for i in view["instances"]] == ["Hello_IN_0", "Hello_IN_1"]
    [command] = api.mutations()
    assert isinstance(command, CreateDeployment)
    assert os.path.isfile(command.package_path)  # staged in the state folder for the controller
    assert command.package_path.startswith(str(api.state / "packages" / "hello"))
    assert b'<Instances count="2" />' in command.configuration  # the package's own configuration
    hosted = (await api.http.get(f"{api.services}/hello", params={"embed-detail": "true"})).json()
    assert hosted["HostedServiceProperties"]["Pool"] == "local"
    assert [d["name"] for d in hosted["Deployments"]] == ["d1"]


async def test_suspended_deploy_with_an_uploaded_toml_free_configuration(
    api: Api, hello_package: bytes, hello
) -> None:
    await api.create_service()
    config = (hello / "ServiceConfiguration.Local.cscfg").read_bytes().replace(b'count="2"', b'count="3"')
    resp = await api.deploy(
        hello_package, Configuration=base64.b64encode(config).decode(), StartDeployment=False
    )
    assert resp.status_code == 202
    view = (await api.http.get(api.slot())).json()
    assert view["status"] == "Suspended" and len(view["instances"]) == 3


async def test_every_deployment_route(api: Api, hello_package: bytes, hello) -> None:
    await api.create_service()
    assert (await api.deploy(hello_package)).status_code == 202
    assert (await api.deploy(hello_package, slot="staging", name="d2")).status_code == 202
    config = (hello / "ServiceConfiguration.Local.cscfg").read_bytes().replace(b'count="2"', b'count="4"')
    b64 = base64.b64encode
    calls = [
        ("config", {"Configuration": b64(config).decode(), "Mode": "Manual"}, ChangeConfiguration),
        (
            "upgrade",
            {"Package": b64(hello_package).decode(), "Mode": "Manual", "Label": "v2"},
            UpgradeDeployment,
        ),
        ("walkupgradedomain", {"UpgradeDomain": 1}, WalkUpgradeDomain),
        ("status", {"Status": "Suspended"}, SetDeploymentStatus),
    ]
    for comp, body, kind in calls:
        resp = await api.http.post(api.slot(), params={"comp": comp}, json=body)
        assert resp.status_code == 202, resp.text
        assert isinstance(api.mutations()[-1], kind)
    view = (await api.http.get(api.slot())).json()
    assert len(view["instances"]) == 4 and view["status"] == "Suspended" and view["label"] == "v2"
    staged = api.state / "packages" / "hello"
    assert len(list(staged.iterdir())) == 2  # one per deployment: the upgrade replaced d1's
    for action in ("reboot", "reimage", "rebuild"):
        resp = await api.http.post(f"{api.slot()}/roleinstances/Hello_IN_1", params={"comp": action})
        assert resp.status_code == 202
        assert api.mutations()[-1] == InstanceAction(
            service="hello", slot="production", instance_id="Hello_IN_1", action=action
        )
    swap = await api.http.post(f"{api.services}/hello", json={"Production": "d1", "SourceDeployment": "d2"})
    assert swap.status_code == 202 and isinstance(api.mutations()[-1], SwapDeployments)
    assert (await api.http.get(api.slot())).json()["name"] == "d2"
    assert (await api.http.post(f"{api.services}/hello", params={"comp": "swap"})).status_code == 202
    assert (await api.http.get(api.slot())).json()["name"] == "d1"
    assert (await api.http.delete(api.slot(slot="staging"))).status_code == 202
    assert isinstance(api.mutations()[-1], DeleteDeployment)
    assert len(list(staged.iterdir())) == 1
    assert error_of(await api.http.get(api.slot(slot="staging"))) == (404, "ResourceNotFound")


async def test_operation_lifecycle(slow_api: Api, hello_package: bytes) -> None:
    api = slow_api
    await api.create_service()
    ops = f"/subscriptions/{api.subscription}/operations"
    first = (await api.deploy(hello_package)).headers["x-ms-request-id"]
    assert (await api.http.get(f"{ops}/{first}")).json()["Status"] == "InProgress"
    await api.controller_ref.ask(Finish(request_id=first))
    assert (await api.http.get(f"{ops}/{first}")).json()["Status"] == "Succeeded"

    second = await api.http.post(api.slot(), params={"comp": "status"}, json={"Status": "Suspended"})
    rid = second.headers["x-ms-request-id"]
    await api.controller_ref.ask(
        Finish(request_id=rid, error_code="RoleStopFailed", error_message="on_stop hung")
    )
    op = (await api.http.get(f"{ops}/{rid}")).json()
    assert op["Status"] == "Failed" and op["HttpStatusCode"] == 400
    assert op["Error"] == {"Code": "RoleStopFailed", "Message": "on_stop hung"}

    # A request RDFE answered itself has an operation too, already over.
    created = await api.create_service("other")
    done = (await api.http.get(f"{ops}/{created.headers['x-ms-request-id']}")).json()
    assert done["Status"] == "Succeeded" and done["HttpStatusCode"] == 201
    refused = await api.create_service("other")
    failed = (await api.http.get(f"{ops}/{refused.headers['x-ms-request-id']}")).json()
    assert failed["Status"] == "Failed" and failed["Error"]["Code"] == "ConflictError"
    assert error_of(await api.http.get(f"{ops}/nope")) == (404, "ResourceNotFound")


async def test_a_handler_bug_is_a_500_with_the_request_id_in_the_log(
    api: Api, hello_package: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await api.create_service()
    resp = await api.deploy(hello_package, name="boom")  # the stand-in raises RuntimeError
    assert error_of(resp) == (500, "InternalError")
    request_id = resp.headers["x-ms-request-id"]
    assert request_id in resp.json()["Error"]["Message"]
    [record] = [r for r in caplog.records if request_id in r.getMessage()]
    assert record.exc_info is not None
    assert not list((api.state / "packages" / "hello").iterdir())  # the staged package went


async def test_rdfe_records_survive_a_restart(tmp_path, hello_package: bytes) -> None:

    state = tmp_path / "state"
    async with open_api(state) as api:
        await api.create_service("kept", Label="still here")
        first_token = api.token
        subscription = api.subscription
    assert not (state / "api").exists()  # a stopped fabric leaves no address behind
    async with open_api(state) as api:
        assert api.token != first_token
        assert api.subscription == subscription
        got = (await api.http.get(f"{api.services}/kept")).json()
        assert got["HostedServiceProperties"]["Label"] == "still here"


@pytest.mark.anyio  # on trio and on asyncio (the anyio_backend fixture, tests/conftest.py)
async def test_the_api_serves_on_every_backend(tmp_path) -> None:
    """Library code uses only anyio: the same server runs under trio and asyncio."""
    async with open_api(tmp_path / "state") as api:
        ok = await api.http.get("/subscriptions")
        async with httpx.AsyncClient(base_url=api.url) as anonymous:
            refused = await anonymous.get("/subscriptions")
    assert (ok.status_code, refused.status_code) == (200, 401)
