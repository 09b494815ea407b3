"""reddog's pytest plugin, installed with the package: the ``role_harness`` and
``fabric_service`` fixtures.

``role_harness`` runs a role in this process (roles.testing), with LocalStorage under the
test's tmp_path; ``fabric_service`` deploys a service on a real embedded fabric (the fast
profile, a temporary state folder). Both hand out async context managers, so that they work
with any async test runner (pytest-trio, anyio's plugin)::

    async def test_worker(role_harness):
        async with role_harness(Worker, settings={"Greeting": "hi"}) as role:
            assert await role.start()

    async def test_on_the_fabric(fabric_service):
        async with fabric_service("examples/guestbook") as service:
            response = httpx.get(service.url("Web", "HttpIn"))

Importing this module stays cheap (every pytest run in the environment loads it): the
fixtures import what they need when used.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pytest

if TYPE_CHECKING:
    from fabric.settings import Settings
    from fabric.testing import DeployedService
    from roles.entry_point import RoleEntryPoint
    from roles.testing import RoleHarness, RoleSpec

E = TypeVar("E", bound="RoleEntryPoint")

#: how long the processes of a stopped fabric may take to be gone before they count as left behind
LEFTOVER_GRACE = 10.0
#: one look at the process tree (a walk of /proc in a worker thread): well under a second
PROCESS_SCAN_TIMEOUT = 10.0


class RoleHarnessFactory:
    """The ``role_harness`` fixture: opens roles.testing harnesses for one test."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self._counter = itertools.count()

    def _root(self) -> Path:
        root = self._tmp_path / f"role-{next(self._counter)}"
        root.mkdir(parents=True)
        return root

    @overload
    def __call__(
        self, entry_point: type[E], **keywords: Any
    ) -> AbstractAsyncContextManager[RoleHarness[E]]: ...

    @overload
    def __call__(
        self, entry_point: str | os.PathLike[str] | RoleSpec, **keywords: Any
    ) -> AbstractAsyncContextManager[RoleHarness[RoleEntryPoint]]: ...

    def __call__(
        self, entry_point: type[RoleEntryPoint] | str | os.PathLike[str] | RoleSpec, **keywords: Any
    ) -> AbstractAsyncContextManager[RoleHarness[Any]]:
        """``async with role_harness(Worker, settings=..., ...) as role``: see roles.testing.open_role."""
        from roles.testing import RoleSpec, open_role

        if isinstance(entry_point, RoleSpec):
            return open_role(entry_point, **keywords)
        return open_role(entry_point, root=self._root(), **keywords)

    def from_service(
        self,
        service: str | os.PathLike[str],
        role: str,
        *,
        index: int = 0,
        config: str | os.PathLike[str] | None = None,
        on_stop_timeout: float | None = None,
    ) -> AbstractAsyncContextManager[RoleHarness[RoleEntryPoint]]:
        """A harness for ``role`` of a service folder, from its real csdef and cscfg (see
        fabric.testing.role_spec_from_service)."""
        from fabric.testing import role_spec_from_service
        from roles.testing import open_role

        spec = role_spec_from_service(
            service, role, root=self._root(), index=index, config=config, on_stop_timeout=on_stop_timeout
        )
        return open_role(spec)


class FabricServiceFactory:
    """The ``fabric_service`` fixture: deploys services on embedded fabrics for one test."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory

    def __call__(
        self,
        service: str | os.PathLike[str],
        *,
        config: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        ready_timeout: float = 120.0,
        **overrides: Any,
    ) -> AbstractAsyncContextManager[DeployedService]:
        """``async with fabric_service(folder) as service``: an embedded fabric (the fast
        profile with ``overrides``, or ``settings``) in a temporary state folder, the service
        deployed and every instance Ready; everything stopped at the end, no process left."""
        return self._open(service, config, settings, ready_timeout, overrides)

    @asynccontextmanager
    async def _open(
        self,
        service: str | os.PathLike[str],
        config: str | os.PathLike[str] | None,
        settings: Settings | None,
        ready_timeout: float,
        overrides: dict[str, Any],
    ) -> AsyncIterator[DeployedService]:
        from fabric.settings import Settings
        from fabric.testing import open_service

        if settings is None:
            settings = Settings.fast(**overrides)
        elif overrides:
            raise TypeError("pass either settings= or setting overrides, not both")
        state_dir = self._tmp_path_factory.mktemp("fabric")
        async with (
            _FabricProcesses(f"the fabric serving {service}") as processes,
            open_service(
                service, state_dir=state_dir, config=config, settings=settings, ready_timeout=ready_timeout
            ) as deployed,
        ):
            try:
                yield deployed
            finally:
                await processes.note_running()  # before the fabric stops: what must be gone after


class _FabricProcesses:
    """Fails (after killing them) if the fabric's processes outlive its block.

    The fabric's processes are the process actors this process starts (``-m actors._child``)
    and everything below them; other children a test starts are left alone.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.before: set[int] = set()
        self.running: set[int] = set()

    async def __aenter__(self) -> _FabricProcesses:
        import anyio.to_thread

        self.before = await anyio.to_thread.run_sync(_fabric_processes)
        return self

    async def note_running(self) -> None:
        """Remember the fabric's processes now: each must be gone once the block has ended."""
        import anyio
        import anyio.to_thread

        with anyio.move_on_after(PROCESS_SCAN_TIMEOUT, shield=True):
            self.running = await anyio.to_thread.run_sync(_fabric_processes) - self.before

    async def __aexit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        import anyio
        import anyio.to_thread

        left: set[int] = set()
        with anyio.move_on_after(LEFTOVER_GRACE, shield=True):
            while True:  # processes cannot be awaited from here: poll, with a deadline
                left = await anyio.to_thread.run_sync(self._left)
                if not left:
                    break
                await anyio.sleep(0.1)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left and kind is None:
            raise RuntimeError(f"{self.what} left processes behind (killed now): pids {sorted(left)}")

    def _left(self) -> set[int]:
        return {pid for pid in self.running if _alive(pid)} | (_fabric_processes() - self.before)


def _alive(pid: int) -> bool:
    import psutil  # type: ignore[import-untyped]

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _fabric_processes() -> set[int]:
    """The live process actors that are our children, and every live process below them."""
    import psutil

    from actors import command_line

    found = set()
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if command_line(child.cmdline())[1:3] == ["-m", "actors._child"]:
                found.add(child.pid)
                found.update(p.pid for p in child.children(recursive=True))
    return {pid for pid in found if _alive(pid)}


@pytest.fixture
def role_harness(tmp_path: Path) -> RoleHarnessFactory:
    """Run a RoleEntryPoint in this process: ``async with role_harness(Worker, ...) as role``,
    or ``role_harness.from_service(folder, "RoleName")``; LocalStorage under tmp_path."""
    return RoleHarnessFactory(tmp_path)


@pytest.fixture
def fabric_service(tmp_path_factory: pytest.TempPathFactory) -> FabricServiceFactory:
    """Deploy a service on a real embedded fabric: ``async with fabric_service(folder) as s``,
    then ``s.url("Web", "HttpIn")``, ``s.chaos``, ``await s.instances()``."""
    return FabricServiceFactory(tmp_path_factory)
