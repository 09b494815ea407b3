"""`fabric logs --list` of an instance on a joined host names each file's own path there (the
host reads the VM folder; the controller and the API carry the paths), as it does locally."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from fabric.client.deployments import deploy_service
from tests.fabric.cluster.joined_kit import FABRIC, cluster, one_joined_host
from tests.netns import loopback_hosts
from tests.paths import EXAMPLES

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def test_each_log_of_a_joined_hosts_vm_is_listed_with_its_own_path(tmp_path: Path) -> None:
    with loopback_hosts(1, tmp_path / "hosts") as hosts:
        async with cluster(hosts, tmp_path) as c:
            await one_joined_host(c)
            async with c.client() as client:
                await deploy_service(client, EXAMPLES / "hello-worker", None)
            await c.all_ready(count=1)
            argv = [FABRIC, "logs", "HelloWorker_IN_0", "--list", "--state-dir", str(c.state)]
            listed = (await anyio.run_process(argv)).stdout.decode()
            rows = [line.split() for line in listed.splitlines()]
            vms = [d for d in hosts[0].state_dir.rglob("vms") if d.is_dir()]
            assert len(rows) >= 3 and {r[0] for r in rows} >= {"WaHostBootstrapper", "WaWorkerHost"}, listed
            paths = [r[2] for r in rows]
            assert len(set(paths)) >= len(paths) - 1, listed  # not the VM folder on every line
            folder = f"{hosts[0].name}:vms/"
            for name, _, where in rows:
                own = name == "stdout" or where.endswith(f"/{name}.log")  # stdout: the role host's .out
                assert where.startswith(folder) and where.endswith(".log") and own, listed
                assert any((d / where.removeprefix(folder)).is_file() for d in vms), (where, vms)
