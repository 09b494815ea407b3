"""A stand-in for the host bootstrapper: spawns a role host and records what it reports."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from actors import Actor, ProcessOptions, Ref, open_system
from roles.protocol import (
    EndpointInfo,
    InstanceInfo,
    LocalResourceInfo,
    RoleEnvironmentData,
    RoleHostConfig,
    RoleHostState,
    WebActivity,
)

FIXTURES = Path(__file__).parent / "fixtures"

HOSTS = {
    "worker": "roles.hosts.worker:WorkerHost",
    "iis": "roles.hosts.iis:IISHost",
    "hwc": "roles.hosts.hwc:WebHost",
    "w3wp": "roles.hosts.w3wp:WebWorker",
}


def environment(
    settings: Mapping[str, str], *, port: int = 20000, scratch: str = "/tmp"
) -> RoleEnvironmentData:
    """An instance of WorkerRole in deployment d-test, with a WebRole beside it."""
    me = InstanceInfo(
        id="WorkerRole_IN_0",
        role_name="WorkerRole",
        update_domain=0,
        fault_domain=1,
        endpoints={"HttpIn": EndpointInfo(name="HttpIn", protocol="http", host="127.0.0.1", port=port)},
    )
    web = InstanceInfo(
        id="WebRole_IN_0",
        role_name="WebRole",
        update_domain=0,
        fault_domain=0,
        endpoints={"Internal": EndpointInfo(name="Internal", protocol="tcp", host="10.0.0.5", port=8080)},
    )
    return RoleEnvironmentData(
        deployment_id="d-test",
        emulated=True,
        current_instance=me,
        settings=dict(settings),
        local_resources={"Scratch": LocalResourceInfo(name="Scratch", root_path=scratch, maximum_size_mb=10)},
        roles={"WorkerRole": [me], "WebRole": [web]},
    )


def worker_config(app: str, markers: Path, *, kind: str = "worker", **changes: Any) -> RoleHostConfig:
    """A RoleHostConfig for fixture folder ``app``; the role writes its marks into ``markers``."""
    settings = {
        "MarkerDir": str(markers),
        "OnStart": "true",
        "Run": "forever",
        "OnStop": "ok",
        "Greeting": "hello",
    }
    settings.update(changes.pop("settings", {}))
    fields: dict[str, Any] = {"on_stop_timeout": 5.0}
    fields.update(changes)
    return RoleHostConfig(
        kind=kind,  # type: ignore[arg-type]
        app_root=str(FIXTURES / app),
        environment=environment(settings),
        **fields,
    )


def marks(markers: Path) -> list[str]:
    """The lines the role appended to events.log."""
    path = markers / "events.log"
    return path.read_text().splitlines() if path.exists() else []


class StateRecorder(Actor):
    """The role host's parent: keeps every RoleHostState and WebActivity it is told."""

    def __init__(self) -> None:
        self.states: list[RoleHostState] = []
        self.activity: list[WebActivity] = []
        self._news = anyio.Event()

    async def receive(self, message: Any) -> Any:
        match message:
            case RoleHostState():
                self.states.append(message)
            case WebActivity():
                self.activity.append(message)
            case _:
                raise TypeError(f"unexpected {message!r}")
        self._news.set()
        self._news = anyio.Event()
        return None

    @property
    def phases(self) -> list[str]:
        """The phases reported so far, in order."""
        return [state.phase for state in self.states]

    async def wait_for(self, phase: str, timeout: float = 15.0) -> RoleHostState:
        """Wait until the host has reported ``phase``; return that report."""
        with anyio.fail_after(timeout):
            while True:
                for state in self.states:
                    if state.phase == phase:
                        return state
                await self._news.wait()


@dataclass
class HostRun:
    """A running role host: its Ref, its parent's records, and the ProcessOptions it runs with."""

    ref: Ref
    recorder: StateRecorder
    config: RoleHostConfig
    extra: dict[str, Any] = field(default_factory=dict)

    async def exit_reason(self, timeout: float = 15.0) -> BaseException | None:
        """Wait for the process to end by itself; return why (None: exit 0)."""
        with anyio.fail_after(timeout):
            return await self.ref.join()


@asynccontextmanager
async def run_host(
    config: RoleHostConfig, *, options: ProcessOptions | None = None
) -> AsyncIterator[HostRun]:
    """Spawn the role host for ``config`` as the bootstrapper would; stop it on the way out."""
    recorder = StateRecorder()
    if options is None:
        options = ProcessOptions(stop_timeout=config.on_stop_timeout + 2.0, term_timeout=1.0)
    env = dict(options.env or {})
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    options = dataclasses.replace(options, env=env)
    async with open_system() as system:
        parent = await system.spawn(lambda: recorder, name="bootstrapper")
        ref = await system.spawn_process(
            HOSTS[config.kind], name=f"role-{os.getpid()}", args=(config,), parent=parent, options=options
        )
        yield HostRun(ref, recorder, config)


async def recycle_sync_worker(markers: str) -> list[str]:
    """Run the sync_worker fixture until it recycles; return its phases (for other backends)."""
    async with run_host(worker_config("sync_worker", Path(markers))) as host:
        await host.exit_reason()
    return host.recorder.phases
