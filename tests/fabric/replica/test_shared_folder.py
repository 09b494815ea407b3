"""A controller replica writes to the shared state folder (packages, service certificates,
deployment folders, the joined hosts' roster) only while its term lasts: a leader paused past its renew deadline writes and
removes nothing there once resumed, before its event loop has even noticed (real PostgreSQL)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from fabric.cluster.port import JoinedHostView, Roster
from fabric.controller import shared_folder
from fabric.controller.commands import _make_folder
from fabric.controller.generations import config_path, write_config
from fabric.controller.leader import Elector
from fabric.controller.messages import ControllerError
from fabric.controller.pg_store import Database
from fabric.frontend.api import ApiError
from fabric.frontend.certificates import forget_certificates
from fabric.frontend.staging import PACKAGES_DIR, stage_package
from fabric.settings import Settings
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.timeout(60)

DEADLINE = 2.0


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def test_a_leader_paused_past_its_deadline_leaves_the_shared_folder_alone(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    db = Database(postgres.create_database(), max_connections=2, name="test")
    await db.open()
    state = tmp_path / "state"
    deployment = state / "deployments" / "d1"
    certificates = state / "certificates" / "svc"
    try:
        elector = Elector(db, "a", duration=3.0, renew_interval=0.2, renew_deadline=DEADLINE)
        async with anyio.create_task_group() as tg:
            await tg.start(elector.run)
            with anyio.fail_after(30):
                await elector.wait_leading()
            with shared_folder.guarded(elector.acting):
                # While it leads, it writes and removes as a single fabric does.
                _make_folder(deployment)
                write_config(deployment, 1, b"<x/>", "c.cscfg")
                certificates.mkdir(parents=True)
                (certificates / "sha1-AB.json").write_text("{}")
                (deployment / "config0.cscfg").write_text("old")
                shared_folder.remove(deployment / "config0.cscfg")
                (state / "cluster").mkdir()
                roster = Roster(state / "cluster", Settings.fast())
                roster.save()
                roster_text = (state / "cluster" / "hosts.json").read_text()
                before = files(state)
                assert "deployments/d1/config1.cscfg" in before
                assert "deployments/d1/config0.cscfg" not in before

                # Paused (the whole loop, as SIGSTOP does) past the renew deadline, then resumed:
                # its loop has not run yet, so it still believes it leads.
                time.sleep(DEADLINE + 0.2)
                assert elector.is_leader
                assert not elector.acting()
                with pytest.raises(ControllerError) as refused:
                    write_config(deployment, 2, b"<y/>", "c.cscfg")
                assert refused.value.status == 503
                with pytest.raises(ControllerError):
                    _make_folder(state / "deployments" / "d2")
                with pytest.raises(ApiError) as staged:
                    stage_package(state, "svc", b"PK\x03\x04 not a real package", None, "")
                assert staged.value.status == 503, staged.value
                shared_folder.remove(config_path(deployment, 1, "c.cscfg"))
                shared_folder.remove(deployment)
                forget_certificates(state, "svc")
                roster.hosts["h1"] = JoinedHostView(
                    name="h1",
                    address="",
                    cores=1,
                    memory_mb=1,
                    fault_domain=0,
                    connected=True,
                    last_seen=1.0,
                    cert_expires=1.0,
                )
                roster.save()
                assert (state / "cluster" / "hosts.json").read_text() == roster_text
                assert files(state) == before  # nothing written, nothing removed
                assert not (state / PACKAGES_DIR / "svc").exists()
            tg.cancel_scope.cancel()
        assert shared_folder.acting()  # outside a term (a single fabric): no guard
    finally:
        await db.aclose()
