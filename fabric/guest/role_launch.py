"""How a role host or web worker process is launched: which class, with what config and options."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, Literal

from actors import Actor, ProcessOptions, Template
from fabric.guest.account import own, role_temp_env, vm_sandbox
from fabric.guest.chaos_directives import on_start_fault
from fabric.guest.disk import VmDisk
from fabric.guest.messages import BootstrapConfig
from fabric.guest.startup import environment_document, resolve_variables
from fabric.model.definition import RoleDefinition
from roles.hosts.http import SERVER_MODULES
from roles.protocol import RoleEnvironmentData, RoleHostConfig, SiteInfo

HostKind = Literal["worker", "iis", "hwc", "w3wp"]

HOST_TARGETS: dict[str, str] = {
    "worker": "roles.hosts.worker:WorkerHost",
    "iis": "roles.hosts.iis:IISHost",
    "hwc": "roles.hosts.hwc:WebHost",
    "w3wp": "roles.hosts.w3wp:WebWorker",
}
HOST_NAMES: dict[str, str] = {
    "worker": "WaWorkerHost",
    "iis": "WaIISHost",
    "hwc": "WaWebHost",
    "w3wp": "W3WP",
}
#: ``kind=module:Class,...`` swaps role host implementations (experiments, stand-ins in tests).
TARGETS_ENV = "REDDOG_ROLE_HOSTS"


def host_target(kind: str) -> str:
    """The process actor class that runs a kind of role host."""
    for item in os.environ.get(TARGETS_ENV, "").split(","):
        name, _, target = item.partition("=")
        if name.strip() == kind and target.strip():
            return target.strip()
    return HOST_TARGETS[kind]


def host_kind(role: RoleDefinition) -> Literal["worker", "iis", "hwc"]:
    """WaWorkerHost for a worker role, WaIISHost for a web role with Sites, else WaWebHost (HWC)."""
    if role.kind == "worker":
        return "worker"
    return "hwc" if role.is_hwc else "iis"


def is_limited(role: RoleDefinition) -> bool:
    """Whether the role's processes run with limited rights (the default executionContext)."""
    return role.runtime is None or role.runtime.execution_context == "limited"


class Relay(Actor):
    """Hands every message to a callback: the parent of one role host or web worker process."""

    def __init__(self, deliver: Callable[[Any], None]) -> None:
        self.deliver = deliver

    async def receive(self, message: Any) -> Any:
        """Deliver the message; answer nothing."""
        self.deliver(message)
        return None


def host_config(
    config: BootstrapConfig,
    disk: VmDisk,
    environment: RoleEnvironmentData,
    kind: HostKind,
    *,
    sites: list[SiteInfo],
    listen_fds: dict[str, int],
) -> RoleHostConfig:
    """The RoleHostConfig of a kind of host for the role, with ``environment``."""
    role, settings = config.role, config.settings
    entry = role.runtime.entry_point if role.runtime is not None else None
    netfx = entry.netfx if entry is not None else None
    program = entry.program if entry is not None else None
    return RoleHostConfig(
        kind=kind,
        app_root=str(disk.approot),
        entry_module=netfx.module_file if netfx is not None else "",
        program=program.command_line if program is not None else "",
        set_ready_on_process_start=program.set_ready_on_process_start if program is not None else True,
        environment=environment,
        log_path="" if kind == "w3wp" else str(disk.role_log(f"{HOST_NAMES[kind]}.log")),
        on_stop_timeout=settings.on_stop_timeout,
        sites=sites if kind != "worker" else [],
        listen_fds=listen_fds,
        web_log_dir=str(disk.iis_log_dir) if kind != "worker" else "",
        idle_timeout=settings.web_worker_idle_timeout,
        chaos_on_start=on_start_fault(disk) if kind != "w3wp" else "",
    )


def process_options(
    config: BootstrapConfig,
    disk: VmDisk,
    environment: RoleEnvironmentData,
    kind: HostKind,
    pass_fds: tuple[int, ...] = (),
) -> ProcessOptions:
    """How a kind of host process runs: in E/approot, in its own process group, for a limited
    role as the VM's account in the VM's sandbox, with TEMP at RoleTemp and the
    Runtime/Environment variables resolved.

    Raises:
        XPathError: a Runtime/Environment variable cannot be resolved.
    """
    s, role = config.settings, config.role
    variables = role.runtime.environment if role.runtime is not None else ()
    env = role_temp_env(disk) | resolve_variables(variables, environment_document(environment))
    limited = config.vm_uid is not None and is_limited(role)
    return ProcessOptions(
        log_path=disk.role_log(f"{HOST_NAMES[kind]}.out.log"),
        env=env,
        cwd=disk.approot,
        new_session=True,
        run_as=config.vm_uid if limited else None,
        sandbox=vm_sandbox(disk, config.state_dir) if limited else None,
        pass_fds=pass_fds,
        python=config.python or None,
        # StatusCheck is the role host's liveness check; W3WP has only the link's pings.
        ping_interval=s.link_ping_interval if kind == "w3wp" else None,
        ping_timeout=s.link_ping_timeout,
        stop_timeout=s.on_stop_timeout + s.process_stop_timeout / 2,
        term_timeout=max(1.0, s.process_stop_timeout / 4),
    )


def prepare_files(config: BootstrapConfig, disk: VmDisk, kind: HostKind) -> None:
    """Give the VM's account the host's own logs and the W3SVC log folder (blocking)."""
    uid = config.vm_uid
    if uid is None or not is_limited(config.role) or os.geteuid() != 0:
        return
    names = [f"{HOST_NAMES[kind]}.log", f"{HOST_NAMES[kind]}.out.log"]
    if kind == "iis":
        names.append(f"{HOST_NAMES['w3wp']}.out.log")
    for name in names:
        log = disk.role_log(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        own(log, uid, 0o600)
    own(disk.iis_log_dir, uid, 0o700)


#: The actor name a VM's role host template shows on its command line.
TEMPLATE_NAME = "RoleHostTemplate"


async def start_template(config: BootstrapConfig, disk: VmDisk, kind: HostKind) -> Template | None:
    """Start the VM's role host template: exec'd as the VM's account in the VM's sandbox, it
    imports the host code of ``kind`` (and W3WP's, for a full IIS role) and nothing else; the
    role hosts are then forked from it (see actors/_zygote.py). None for a role that does not
    run limited, or where templates cannot run.

    It is given the bootstrapper's own environment, not the role's (no setting, no
    Runtime/Environment variable, no TEMP): those reach each role host with its fork.

    Raises:
        OSError: it could not start (its output is in the host's ``.out.log``).
    """
    limited = config.vm_uid is not None and is_limited(config.role)
    if not limited or os.environ.get(TEMPLATE_ENV, "1") == "0":
        return None
    kinds: list[str] = [kind, "w3wp"] if kind == "iis" else [kind]
    preload = [host_target(k).partition(":")[0] for k in kinds]
    if kind != "worker":
        # A web host serves its sites right after on_start: the server's modules are imported
        # here, once per VM, and shared by every role host forked (not by a worker role's VMs:
        # the host's guest template leaves them out, as they would grow every VM process).
        preload.extend(SERVER_MODULES)
    # The seed this bootstrapper planted at its birth (a copy of the host's template, which
    # shares its pages with every VM of the host), else a template exec'd for this VM.
    adopted = None
    if _uses_seed(config):
        try:
            adopted = await Template.adopt(
                TEMPLATE_NAME,
                run_as=config.vm_uid,  # type: ignore[arg-type]
                sandbox=vm_sandbox(disk, config.state_dir),
                preload=preload,
                log_path=disk.role_log(f"{HOST_NAMES[kind]}.out.log"),
                cwd=disk.approot,
            )
        except OSError:
            adopted = None  # the seed is gone (killed): exec a template instead
    return adopted or await Template.start(
        TEMPLATE_NAME,
        run_as=config.vm_uid,  # type: ignore[arg-type]
        sandbox=vm_sandbox(disk, config.state_dir),
        preload=preload,
        log_path=disk.role_log(f"{HOST_NAMES[kind]}.out.log"),
        cwd=disk.approot,
        python=config.python or None,
    )


def _uses_seed(config: BootstrapConfig) -> bool:
    limited = config.vm_uid is not None and is_limited(config.role)
    same_python = config.python in ("", sys.executable)
    return limited and same_python and os.environ.get(TEMPLATE_ENV, "1") != "0"


async def release_unused_seed(config: BootstrapConfig) -> None:
    """End the template seed this bootstrapper planted at its birth when its role will never
    turn it into a template (elevated, another interpreter, templates off): an idle root
    process otherwise."""
    if not _uses_seed(config):
        seed = Template.seeded(TEMPLATE_NAME)
        if seed is not None:
            await seed.close()


#: ``0`` turns role host templates off: every limited host is exec'd (to compare, or to rule
#: them out).
TEMPLATE_ENV = "REDDOG_ROLE_HOST_TEMPLATE"
