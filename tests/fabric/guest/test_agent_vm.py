"""The guest agent and AppAgent with real VMs: provisioning, logs, heartbeats, agent updates."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import psutil
import pytest

from actors import ActorDead, ActorError
from fabric.guest.disk import VmDisk
from fabric.guest.messages import Heartbeat, HeartbeatReply, RecycleRole, UpdateGuestAgent
from fabric.settings import Settings
from tests.fabric.guest.agent_support import booted
from tests.paths import EXAMPLES

pytestmark = pytest.mark.timeout(120)


def disk(vm) -> VmDisk:  # type: ignore[no-untyped-def]
    c = vm.config
    return VmDisk(Path(c.vm_root), c.deployment_id, c.role.name, c.instance_id)


async def test_worker_vm_boots_to_ready_with_the_seed_layout(tmp_path: Path) -> None:
    async with booted("hello-worker", "HelloWorker", tmp_path) as vm:
        await vm.wait_for("ReadyRole")
        reply: HeartbeatReply = await vm.ref.ask(Heartbeat(1))
        assert reply.status.status == "ReadyRole"
        assert reply.instance_id == "HelloWorker_IN_0"
        d = disk(vm)
        for path in (
            d.app_agent_log,
            d.app_agent_runtime_log,
            d.bootstrapper_log,
            d.config_file,
            d.role_model,
            d.approot / "worker.py",
            d.firewall_file,
        ):
            assert path.exists(), path
        assert "heartbeat 1: ReadyRole" in d.app_agent_log.read_text()
        runtime = d.app_agent_runtime_log.read_text()
        assert "copied the role's code" in runtime and "starting WaHostBootstrapper" in runtime
        assert b"<RoleEnvironment>" in d.config_file.read_bytes()
        assert vm.statuses.index("CreatingRole") < vm.statuses.index("ReadyRole")
    # the VM is gone, the suite's fixture checks no process is left


async def test_guest_agent_update_keeps_the_role_running(tmp_path: Path) -> None:
    async with booted("hello-worker", "HelloWorker", tmp_path) as vm:
        await vm.wait_for("ReadyRole")
        before: HeartbeatReply = await vm.ref.ask(Heartbeat(1))
        role_pid = before.status.role_pid
        assert role_pid and psutil.pid_exists(role_pid)
        assert (
            await vm.ref.ask(UpdateGuestAgent("tests.fabric.guest.agent_support:GuestAgentV2"))
            == "tests.fabric.guest.agent_support:GuestAgentV2"
        )
        with anyio.fail_after(30):
            while True:
                after: HeartbeatReply = await vm.ref.ask(Heartbeat(2))
                if after.agent_version == "2.0" and after.status.status == "ReadyRole":
                    break
                await anyio.sleep(0.05)
        assert after.status.role_pid == role_pid  # the same role host process: no restart


async def test_a_vm_whose_guest_agent_crashed_answers_no_heartbeat(tmp_path: Path) -> None:
    # The host's watchdog must see a dead guest agent as silence (RoleStateUnknown, then the
    # guest OS restarted), not go on hearing the last status it knew.
    agent = "tests.fabric.guest.agent_support:CrashingAgent"
    async with booted("hello-worker", "HelloWorker", tmp_path, agent=agent) as vm:
        await vm.wait_for("ReadyRole")
        assert (await vm.ref.ask(Heartbeat(1))).status.status == "ReadyRole"
        await vm.ref.tell(RecycleRole())
        with anyio.fail_after(10):
            while True:
                try:
                    await vm.ref.ask(Heartbeat(2))
                except (ActorError, ActorDead):
                    break
                await anyio.sleep(0.05)


async def test_local_storage_over_quota_is_reported(tmp_path: Path) -> None:
    settings = Settings.fast(diagnostics_interval=0.2)
    async with booted("guestbook", "Web", tmp_path, settings=settings) as vm:
        await vm.wait_for("ReadyRole")
        scratch = disk(vm).local_resource("Scratch")
        (scratch / "big.bin").write_bytes(b"\0" * (11 * 1024 * 1024))  # Scratch is 10 MB
        with anyio.fail_after(30):
            while "Scratch" not in (await vm.ref.ask(Heartbeat(3))).storage_over_quota:
                await anyio.sleep(0.1)
        assert "LocalStorage Scratch uses more than its sizeInMB" in disk(vm).app_agent_log.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_limited_role_runs_unprivileged_and_storage_is_its_own(tmp_path: Path) -> None:
    async with booted("hello-worker", "HelloWorker", tmp_path) as vm:
        await vm.wait_for("ReadyRole")
        reply: HeartbeatReply = await vm.ref.ask(Heartbeat(1))
        assert psutil.Process(reply.status.role_pid).uids().effective != 0


def test_certificates_are_owner_only(tmp_path: Path) -> None:
    import msgspec

    from fabric.guest.messages import CertificateFile
    from fabric.guest.provision import disk_of, place_certificates
    from fabric.guest.standalone import guest_config_for
    from fabric.model import load_service

    service = load_service(EXAMPLES / "hello-worker")
    config = guest_config_for(service, "HelloWorker", 0, tmp_path, Settings.fast())
    config = msgspec.structs.replace(
        config,
        certificates=[CertificateFile(name="Ssl", thumbprint="ABCDEF", pem="-----BEGIN CERTIFICATE-----\n")],
    )
    lines: list[str] = []
    place_certificates(config, disk_of(config), lines.append)
    certificates = disk_of(config).certificates_dir
    pem = certificates / "LocalMachine" / "My" / "ABCDEF.pem"
    assert pem.read_text().startswith("-----BEGIN CERTIFICATE")
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    for folder in (certificates, certificates / "LocalMachine", pem.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert "placed certificate Ssl (ABCDEF)" in lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="VM accounts need root")
def test_the_vms_account_may_read_limited_certificates_only(tmp_path: Path) -> None:
    import msgspec

    from fabric.guest.messages import CertificateFile
    from fabric.guest.provision import disk_of, grant_account, place_certificates
    from fabric.guest.standalone import guest_config_for
    from fabric.model import load_service
    from fabric.model.definition import Certificate

    service = load_service(EXAMPLES / "hello-worker")
    config = guest_config_for(service, "HelloWorker", 0, tmp_path, Settings.fast())
    role = msgspec.structs.replace(
        config.role,
        certificates=(
            Certificate(name="Ssl", store_location="LocalMachine", store_name="My"),
            Certificate(
                name="Admin", store_location="LocalMachine", store_name="My", permission_level="elevated"
            ),
        ),
    )
    config = msgspec.structs.replace(
        config,
        role=role,
        vm_uid=65002,
        certificates=[
            CertificateFile(name="Ssl", thumbprint="AAAA", pem="-----BEGIN CERTIFICATE-----\n"),
            CertificateFile(name="Admin", thumbprint="BBBB", pem="-----BEGIN CERTIFICATE-----\n"),
        ],
    )
    disk = disk_of(config)
    disk.create()
    place_certificates(config, disk, lambda line: None)
    grant_account(config, disk, lambda line: None)
    store = disk.certificates_dir / "LocalMachine" / "My"
    for folder in (disk.certificates_dir, store.parent, store):
        assert (folder.stat().st_gid, stat.S_IMODE(folder.stat().st_mode)) == (65002, 0o750)
    limited, elevated = (store / "AAAA.pem").stat(), (store / "BBBB.pem").stat()
    assert (limited.st_gid, stat.S_IMODE(limited.st_mode)) == (65002, 0o640)
    assert (elevated.st_uid, elevated.st_gid, stat.S_IMODE(elevated.st_mode)) == (0, 0, 0o600)
