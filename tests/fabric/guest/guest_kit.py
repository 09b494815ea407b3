"""Helpers for the bootstrapper tests: a VM folder, a role's code, and a booted bootstrapper.

A test builds a BootstrapConfig over a VM folder in tmp_path, and ``boot`` spawns the real
HostBootstrapper process under a recording parent actor that keeps every InstanceStatus.
"""

from __future__ import annotations

import socket
import textwrap
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import psutil

from actors import Actor, ProcessOptions, Ref, open_system
from fabric.guest.account import secure_vm
from fabric.guest.disk import VmDisk
from fabric.guest.messages import BootstrapConfig, InstanceStatus
from fabric.model.definition import RoleDefinition
from fabric.settings import Settings
from roles.protocol import EndpointInfo, InstanceInfo, LocalResourceInfo, RoleEnvironmentData

DEPLOYMENT = "d0c5e1f2"
#: A VM account for tests of limited roles (in the dynamic range, with no account entry).
VM_UID = 65000

#: Short enough that each behaviour shows in well under a second, long enough for 2 cores.
FAST = Settings.fast(
    status_check_interval=0.2,
    status_check_timeout=0.6,
    role_unresponsive_timeout=1.0,
    on_stop_timeout=3.0,
    role_restart_initial=0.2,
    role_restart_factor=2.0,
    role_restart_max=1.0,
    role_restart_reset=10.0,
    role_cycling_after=3,
    diagnostics_interval=0.2,
    process_stop_timeout=3.0,
    link_ping_interval=1.0,
    link_ping_timeout=5.0,
)

WORKER = """
from roles import RoleEntryPoint


class Worker(RoleEntryPoint):
    async def run(self):
        import anyio
        await anyio.sleep_forever()
"""


class StatusRecorder(Actor):
    """The bootstrapper's parent in tests: keeps every InstanceStatus it is told."""

    def __init__(self, seen: list[InstanceStatus], changed: Callable[[], None]) -> None:
        self.seen = seen
        self.changed = changed

    async def receive(self, message: Any) -> Any:
        if isinstance(message, InstanceStatus):
            self.seen.append(message)
            self.changed()
        return None


async def wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Wait until a process is gone (a zombie counts as gone: it runs no more)."""
    with anyio.fail_after(timeout):
        while True:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            await anyio.sleep(0.02)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Vm:
    """A VM folder for one role instance and the BootstrapConfig that boots it."""

    def __init__(self, root: Path, role: RoleDefinition) -> None:
        self.root = root
        self.role = role
        self.disk = VmDisk(root, DEPLOYMENT, role.name, f"{role.name}_IN_0")
        self.disk.create()
        self.disk.approot.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, text: str) -> Path:
        """Write a file of the role's code (E/approot/<name>)."""
        path = self.disk.approot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def config(
        self,
        *,
        settings: Settings = FAST,
        values: Mapping[str, str] | None = None,
        endpoints: Mapping[str, tuple[str, int]] | None = None,
        vm_uid: int | None = None,
        state_dir: Path | None = None,
        **env: Any,
    ) -> BootstrapConfig:
        """The BootstrapConfig of this VM; ``endpoints`` maps names to (protocol, port).

        With ``vm_uid``, the VM's folders are laid out for that account as the guest agent
        lays them out (``state_dir`` is what its limited processes must not see).
        """
        if vm_uid is not None:
            writable = [self.disk.local_resource(ls.name) for ls in self.role.local_storage]
            secure_vm(self.disk, vm_uid, [*writable, self.disk.role_temp, self.disk.iis_log_dir])
        me = InstanceInfo(
            id=self.disk.instance_id,
            role_name=self.role.name,
            update_domain=1,
            fault_domain=0,
            endpoints={
                name: EndpointInfo(name=name, protocol=protocol, host="127.0.0.1", port=port)
                for name, (protocol, port) in (endpoints or {}).items()
            },
        )
        resources = {
            ls.name: LocalResourceInfo(
                name=ls.name, root_path=str(self.disk.local_resource(ls.name)), maximum_size_mb=ls.size_in_mb
            )
            for ls in self.role.local_storage
        }
        return BootstrapConfig(
            vm_root=str(self.root),
            deployment_id=DEPLOYMENT,
            instance_id=self.disk.instance_id,
            role=self.role,
            environment=RoleEnvironmentData(
                deployment_id=DEPLOYMENT,
                current_instance=me,
                settings=dict(values or {}),
                local_resources=resources,
                **env,
            ),
            settings=settings,
            vm_uid=vm_uid,
            state_dir=str(state_dir or ""),
        )


class Booted:
    """A running bootstrapper and the statuses it has told its parent."""

    def __init__(self, ref: Ref, seen: list[InstanceStatus], vm: Vm) -> None:
        self.ref = ref
        self.seen = seen
        self.vm = vm
        self._changed = anyio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def statuses(self) -> list[str]:
        """Every status told so far, in order, repeats collapsed."""
        names: list[str] = []
        for status in self.seen:
            if not names or names[-1] != status.status:
                names.append(status.status)
        return names

    @property
    def last(self) -> InstanceStatus:
        """The latest status told."""
        return self.seen[-1]

    async def wait_for(
        self, status: str | Callable[[InstanceStatus], bool], timeout: float = 10.0, *, after: int = 0
    ) -> InstanceStatus:
        """Wait until a status (by name or predicate) is told, at index ``after`` or later."""
        check = status if callable(status) else (lambda s: s.status == status)
        with anyio.fail_after(timeout):
            while True:
                for found in self.seen[after:]:
                    if check(found):
                        return found
                await self._changed.wait()

    def log(self) -> str:
        """WaHostBootstrapper.log as written so far."""
        return self.vm.disk.bootstrapper_log.read_text()

    async def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """WaHostBootstrapper.log once it holds ``text`` (polled: the file has no event)."""
        with anyio.fail_after(timeout):
            while text not in (log := self.log()):
                await anyio.sleep(0.02)
        return log


@asynccontextmanager
async def boot(
    vm: Vm, config: BootstrapConfig, *, env: Mapping[str, str] | None = None
) -> AsyncIterator[Booted]:
    """Spawn HostBootstrapper for ``config``; leaving the block stops it (the VM stops)."""
    seen: list[InstanceStatus] = []
    holder: list[Booted] = []

    def changed() -> None:
        if holder:
            holder[0].changed()

    async with open_system() as system:
        recorder = await system.spawn(lambda: StatusRecorder(seen, changed), name="guest")
        ref = await system.spawn_process(
            "fabric.guest.bootstrapper:HostBootstrapper",
            name="WaHostBootstrapper",
            args=(config,),
            parent=recorder,
            options=ProcessOptions(
                log_path=vm.disk.diagnostic_store / "WaHostBootstrapper.out.log",
                env=dict(env or {}),
                stop_timeout=30.0,
            ),
        )
        booted = Booted(ref, seen, vm)
        holder.append(booted)
        yield booted
        await ref.stop()


def decode(struct: Any) -> Any:
    """A Struct as plain builtins (for readable assertion diffs)."""
    return msgspec.to_builtins(struct)
