"""A role host that goes silent right after Ready is caught by the StatusCheck watchdog, as any
running role is, even when its start handshake never reached the bootstrapper (it reported,
then stopped before the handshake got through): no 60 s start timeout to wait out."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import anyio
import psutil
import pytest

from actors import ProcessExited, Ref, open_system
from fabric.guest.role_host import RoleHost
from fabric.guest.role_launch import HOST_NAMES, HostKind
from fabric.model.definition import RoleDefinition
from fabric.model.status import RoleStatus
from tests.fabric.guest.guest_kit import FAST, Vm

pytestmark = pytest.mark.timeout(60)

ROLE = RoleDefinition(name="Worker", kind="worker")
MakeVm = Callable[[RoleDefinition], Vm]

#: stops its own process as Run begins, the first time only (the marker is in its approot)
STOPS_ITSELF_ONCE = """
import os
import signal
from pathlib import Path

import anyio

from roles import RoleEntryPoint


class Worker(RoleEntryPoint):
    async def run(self):
        marker = Path("stopped-once")
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGSTOP)
        await anyio.sleep_forever()
"""

#: what the watchdog may take: the checks until it gives up, then a restart to Ready (generous:
#: a loaded CI machine), well short of the 60 s a host has to complete its start handshake
WATCHDOG_BOUND = FAST.status_check_interval + FAST.status_check_timeout + FAST.role_unresponsive_timeout + 12


class HandshakeLost(RoleHost):
    """A RoleHost whose first host's start handshake never arrives: its spawn returns only
    once that process is gone, as the real one fails when the host stopped before sending it."""

    first = True
    first_pid = 0

    async def spawn(self, kind: HostKind, deliver: Callable[[Any], None], listen_fds: dict[str, int]) -> Ref:
        ref = await super().spawn(kind, deliver, listen_fds)
        if not self.first:
            return ref
        self.first, self.first_pid = False, ref.pid or 0
        await ref.join()
        self.release(ref)
        raise ProcessExited(HOST_NAMES[kind], -signal.SIGKILL, "before it started")


async def test_a_role_host_silent_before_its_handshake_arrives_is_recycled_by_the_watchdog(
    make_vm: MakeVm,
) -> None:
    vm = make_vm(ROLE)
    vm.write("worker.py", STOPS_ITSELF_ONCE)
    seen: list[tuple[RoleStatus, str, float]] = []
    ready_again = anyio.Event()

    def set_status(status: RoleStatus, detail: str) -> None:
        seen.append((status, detail, anyio.current_time()))
        if status == "ReadyRole" and host.restarts == 1:
            ready_again.set()

    async with open_system() as system:
        host = HandshakeLost(
            system=system,
            config=vm.config(),
            disk=vm.disk,
            log=lambda line: None,
            set_status=set_status,
            sites=[],
            listen_fds={},
        )
        begun = anyio.current_time()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(host.run)
                with anyio.fail_after(WATCHDOG_BOUND):
                    await ready_again.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await host.stop()
        statuses = [s for s, _, _ in seen]
        unresponsive = statuses.index("UnresponsiveRole")
        assert "did not complete its start" in seen[unresponsive][1]
        assert "unresponsive" in seen[statuses.index("StoppingRole", unresponsive)][1]
        assert seen[-1][2] - begun < WATCHDOG_BOUND
        assert host.first_pid and not (
            psutil.pid_exists(host.first_pid) and psutil.Process(host.first_pid).status() != "zombie"
        )
