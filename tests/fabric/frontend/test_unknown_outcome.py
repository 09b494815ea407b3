"""A deploy or upgrade the controller did not answer in time: its outcome is unknown, so its
staged package stays for the controller to read, the client gets a 504 that says how to check,
and the package goes only once nothing can read it any more."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import pytest

from actors import open_system
from fabric.controller.messages import CreateDeployment, UpgradeDeployment
from fabric.frontend.ffe import Ffe, Pool, Upgrade
from tests.fabric.frontend.frontend_kit import Api, open_api
from tests.fabric.frontend.frontend_standin import StandInController
from tests.fabric.frontend.test_api import error_of

pytestmark = pytest.mark.timeout(60)

#: FFE's wait for the stand-in controller: short, so that a held command times out quickly
COMMAND_TIMEOUT = 0.5


def staged(api: Api) -> set[str]:
    """The names of the hello service's staged packages."""
    folder = api.state / "packages" / "hello"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


async def test_a_deploy_without_an_answer_keeps_its_package_for_the_controller(
    tmp_path: Path, hello_package: bytes
) -> None:
    async with open_api(tmp_path / "state", command_timeout=COMMAND_TIMEOUT) as api:
        await api.create_service()
        api.controller.hold = hold = anyio.Event()
        resp = await api.deploy(hello_package)
        assert error_of(resp) == (504, "OperationOutcomeUnknown")
        message = resp.json()["Error"]["Message"]
        assert "did not answer" in message and f"GET {api.slot()}" in message
        [command] = api.mutations()
        assert isinstance(command, CreateDeployment)
        package = Path(command.package_path)
        assert package.is_file()

        # The controller carries the deployment out after all, with its package.
        hold.set()
        view = await api.http.get(api.slot())  # the controller answers it after the deploy
        assert view.status_code == 200 and view.json()["name"] == "d1"

        # An upgrade the controller does not answer either: both packages stay.
        api.controller.hold = hold = anyio.Event()
        body = {"Package": base64.b64encode(hello_package).decode(), "Label": "v2"}
        resp = await api.http.post(api.slot(), params={"comp": "upgrade"}, json=body)
        assert error_of(resp) == (504, "OperationOutcomeUnknown")
        upgrade = api.mutations()[-1]
        assert isinstance(upgrade, UpgradeDeployment)
        assert staged(api) == {package.name, Path(upgrade.package_path).name}
        hold.set()
        assert (await api.http.get(api.slot())).json()["label"] == "v2"

        # Deleted: the controller answered, so it read every package it was sent; they go.
        api.controller.hold = None
        assert (await api.http.delete(api.slot())).status_code == 202
        assert staged(api) == set()


def recorded_packages(api: Api) -> dict[str, str]:
    """The package RDFE records for each deployment of hello (what a configuration is checked against)."""
    records = json.loads((api.state / "rdfe.json").read_text())
    [hosted] = [s["hosted_services"]["hello"] for s in records["subscriptions"].values()]
    packages: dict[str, str] = hosted["packages"]
    return packages


async def test_after_an_upgrade_without_an_answer_no_package_is_assumed(
    tmp_path: Path, hello_package: bytes
) -> None:
    async with open_api(tmp_path / "state", command_timeout=COMMAND_TIMEOUT) as api:
        await api.create_service()
        assert (await api.deploy(hello_package)).status_code == 202
        assert set(recorded_packages(api)) == {"d1"}
        api.controller.hold = anyio.Event()
        body = {"Package": base64.b64encode(hello_package).decode()}
        resp = await api.http.post(api.slot(), params={"comp": "upgrade"}, json=body)
        assert error_of(resp) == (504, "OperationOutcomeUnknown")
        # d1 runs the old package or the new one: a configuration is checked against neither.
        assert recorded_packages(api) == {}
        api.controller.hold.set()


async def test_unreferenced_packages_go_at_startup(tmp_path: Path, hello_package: bytes) -> None:
    state = tmp_path / "state"
    async with open_api(state) as api:
        await api.create_service()
        assert (await api.deploy(hello_package)).status_code == 202
        kept = staged(api)
    # Left by a fabric stopped between staging and recording, or by a command never answered.
    (state / "packages" / "hello" / "0123abcd.cspkg").write_bytes(b"PK")
    (state / "packages" / "gone").mkdir()
    (state / "packages" / "gone" / "4567cdef.cspkg").write_bytes(b"PK")
    async with open_api(state) as api:
        assert staged(api) == kept
        assert not (state / "packages" / "gone").exists()


async def test_a_failed_sweep_does_not_fail_the_change(
    api: Api, hello_package: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> None:
        raise OSError("the disk is gone")

    monkeypatch.setattr("fabric.frontend.ffe.discard_unreferenced", broken)
    await api.create_service()
    assert (await api.deploy(hello_package)).status_code == 202  # made: the sweep is best effort
    assert (await api.http.get(api.slot())).json()["name"] == "d1"
    assert any("not swept" in r.getMessage() for r in caplog.records)


async def test_an_upgrade_whose_controller_is_gone_keeps_its_package(
    tmp_path: Path, hello_package: bytes
) -> None:
    async with open_system() as system:
        controller = await system.spawn(StandInController, name="fc")
        ffe = await system.spawn(lambda: Ffe([Pool("p1", controller)], tmp_path), name="ffe")
        await controller.stop()  # gone: before or while it handled the command, FFE cannot tell
        upgrade = Upgrade(pool="p1", service="hello", slot="production", package=hello_package)
        submitted = await ffe.ask(upgrade)
    assert submitted.answer is None and "is gone" in submitted.unknown
    assert Path(submitted.package_path).is_file()  # kept: swept once nothing can read it
