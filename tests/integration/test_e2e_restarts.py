"""End to end, real processes: an instance's restarts count every role host start after the
first, whatever caused it, and are kept in the store across a restart of the fabric."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.e2e_kit import SERVICES, copy_service, role_host_of, running_fabric

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


async def test_restarts_count_every_role_host_start_and_survive_a_fabric_restart(tmp_path: Path) -> None:
    service = copy_service(SERVICES / "stopmark", tmp_path, replace={"MARKER": str(tmp_path / "stops")})
    async with running_fabric(tmp_path) as fab:
        await fab.deploy(service)
        [ready] = await fab.all_ready("stopmark", 1)
        assert ready.restarts == 0
        role_host_of("Stopper_IN_0", "WaWorkerHost").kill()  # a crash: the bootstrapper restarts it

        async def restarted_once() -> bool:
            [instance] = await fab.instances("stopmark")
            return instance.status == "ReadyRole" and instance.restarts == 1

        await fab.wait_until(restarted_once, 60)
    # The fabric stopped (its VMs with it) and starts again from its store: the VM boots again,
    # and that role host start is one more restart, counted on top of the one before.
    async with running_fabric(tmp_path) as fab:
        [ready] = await fab.all_ready("stopmark", 1)
        assert ready.restarts == 2
