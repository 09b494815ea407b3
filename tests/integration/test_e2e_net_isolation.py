"""End to end, as root, real processes: a role cannot connect to another deployment's instance
ports on this machine (only through its load balancer), while the instances of one deployment
reach each other's; the fabric's nft table is gone once it stops."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.integration.e2e_kit import running_fabric

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("nft") is None, reason="VM isolation needs root and nft"
    ),
]

DEFINITION = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="{name}" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WorkerRole name="{name}" vmsize="ExtraSmall">
    <ConfigurationSettings><Setting name="Targets" /></ConfigurationSettings>
    <Endpoints>
      <InputEndpoint name="In" protocol="tcp" port="{port}" />
      <InternalEndpoint name="Peer" protocol="tcp" />
    </Endpoints>
    <LocalResources><LocalStorage name="Data" sizeInMB="10" cleanOnRoleRecycle="false" /></LocalResources>
    <Runtime><EntryPoint><NetFxEntryPoint assemblyName="role.py" /></EntryPoint></Runtime>
  </WorkerRole>
</ServiceDefinition>
"""
CONFIGURATION = """<?xml version="1.0" encoding="utf-8"?>
<ServiceConfiguration serviceName="{name}" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">
  <Role name="{name}">
    <Instances count="{count}" />
    <ConfigurationSettings><Setting name="Targets" value="{targets}" /></ConfigurationSettings>
  </Role>
</ServiceConfiguration>
"""
#: Answers on both its endpoints; probes its deployment's other instances (until they answer)
#: and the Targets setting (once), and writes what it got to report.json.
ROLE = """
import json
import socket
import threading
import time
from pathlib import Path

import anyio

from roles import RoleEntryPoint, RoleEnvironment


def serve(server, me):
    while True:
        conn, _ = server.accept()
        conn.sendall(f"hi from {me}\\n".encode())
        conn.close()


def probe(target):
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=3) as conn:
            conn.settimeout(3)
            return conn.recv(100).decode().strip()
    except OSError as exc:
        return type(exc).__name__


class Net(RoleEntryPoint):
    async def on_start(self) -> bool:
        me = RoleEnvironment.current_instance
        for endpoint in me.instance_endpoints.values():
            server = socket.create_server(endpoint.ip_endpoint)
            threading.Thread(target=serve, args=(server, me.id), daemon=True).start()
        return True

    async def run(self) -> None:
        me = RoleEnvironment.current_instance
        report = {}
        for peer in RoleEnvironment.roles[me.role_name].instances:
            if peer.id != me.id:
                endpoint = peer.instance_endpoints["Peer"]
                target = f"{endpoint.host}:{endpoint.port}"
                deadline = time.monotonic() + 60
                while not (answer := await anyio.to_thread.run_sync(probe, target)).startswith("hi"):
                    if time.monotonic() > deadline:
                        break
                    await anyio.sleep(0.2)
                report[target] = answer
        for target in RoleEnvironment.get_config_setting("Targets").split():
            report[target] = await anyio.to_thread.run_sync(probe, target)
        root = Path(RoleEnvironment.get_local_resource("Data").root_path)
        (root / "report.tmp").write_text(json.dumps(report))
        (root / "report.tmp").rename(root / "report.json")
        await anyio.sleep_forever()
"""


def make_service(tmp_path: Path, name: str, port: int, count: int, targets: str = "") -> Path:
    folder = tmp_path / name
    (folder / name).mkdir(parents=True)
    (folder / "ServiceDefinition.csdef").write_text(DEFINITION.format(name=name, port=port))
    (folder / "ServiceConfiguration.Local.cscfg").write_text(
        CONFIGURATION.format(name=name, count=count, targets=targets)
    )
    (folder / name / "role.py").write_text(textwrap.dedent(ROLE))
    return folder


def reports(state_dir: Path, role: str) -> dict[str, dict[str, str]]:
    found = {}
    for path in (state_dir / "vms").glob(f"*.{role}_IN_*/**/report.json"):
        instance = next(p for p in path.parts if f".{role}_IN_" in p).rsplit(".", 1)[1]
        found[instance] = json.loads(path.read_text())
    return found


def our_tables() -> list[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"reddog_fw_{os.getpid()}" in line]


async def test_a_role_reaches_its_own_deployment_and_only_the_balancer_of_another(tmp_path: Path) -> None:
    async with running_fabric(tmp_path) as fab:
        assert our_tables() == [f"table inet reddog_fw_{os.getpid()}"]
        a_service, _ = await fab.deploy(make_service(tmp_path, "Alpha", 18401, 2))
        alpha = await fab.all_ready(a_service, 2)
        a_ports = sorted(address for i in alpha for address in i.endpoints.values())
        public = (await fab.view(a_service)).endpoints[0]
        targets = [*a_ports, f"{public.host}:{public.port}"]
        b_service, _ = await fab.deploy(make_service(tmp_path, "Bravo", 18402, 1, " ".join(targets)))
        await fab.all_ready(b_service, 1)

        a_reports = await fab.wait_until(lambda: len(found := reports(fab.state_dir, "Alpha")) == 2 and found)
        b_reports = await fab.wait_until(lambda: reports(fab.state_dir, "Bravo"))
        # Alpha's instances reach each other's ports (its own deployment).
        answers = sorted(answer for report in a_reports.values() for answer in report.values())
        assert answers == ["hi from Alpha_IN_0", "hi from Alpha_IN_1"]
        # Bravo's role: refused at each of Alpha's instance ports, served through the balancer.
        (b_report,) = b_reports.values()
        assert {t: b_report[t] for t in a_ports} == dict.fromkeys(a_ports, "ConnectionRefusedError")
        assert b_report[f"{public.host}:{public.port}"].startswith("hi from Alpha_IN_")
    assert our_tables() == []
