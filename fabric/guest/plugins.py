"""Plugins (seed H): each imported Diagnostics, RemoteAccess or RemoteForwarder module expands into
two startup tasks, placed before the role's own as Azure expands them: a background task (the
agent, which keeps running beside the role) and a simple ``/blockStartup`` task that waits until
the agent has initialised, so the role starts only once diagnostics and remote access are set.

The pair meet on a Unix socket the agent opens once it is ready (see plugin_agents._ready), in
the VM's own C/Runtime folder (root's only; the bootstrapper empties it when it starts, so a
killed run leaves nothing behind elsewhere).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from fabric.guest.disk import VmDisk
from fabric.guest.startup import TaskPlan
from fabric.model.definition import PLUGIN_SETTINGS, RoleDefinition, TaskVariable
from fabric.settings import Settings
from roles.protocol import RoleEnvironmentData

#: How long a /blockStartup task waits for its agent before it fails the instance.
PLUGIN_INIT_TIMEOUT = 60.0

_AGENTS = {
    "Diagnostics": "fabric.guest.plugin_agents.diagnostics",
    "RemoteAccess": "fabric.guest.plugin_agents.remote_access",
    "RemoteForwarder": "fabric.guest.plugin_agents.remote_access",
}


def setting_variable(setting: str) -> str:
    """The environment variable a plugin agent reads a setting from (dots become underscores)."""
    return setting.replace(".", "_")


def expand_plugins(
    role: RoleDefinition,
    environment: RoleEnvironmentData,
    *,
    disk: VmDisk,
    settings: Settings,
    python: str,
    runtime_dir: Path,
    bootstrapper_pid: int,
    vm_uid: int | None = None,
    state_dir: str = "",
) -> list[TaskPlan]:
    """The startup tasks the role's Imports expand into, in import order, agent first.

    The RemoteAccess agent is told where its sessions run: the VM, its account (``vm_uid``)
    and the state folder its sandbox hides.

    The plugin's settings that the configuration gives reach the agent as environment
    variables read through RoleInstanceValue xpaths, as the plugins' own definitions did.
    """
    plans: list[TaskPlan] = []
    for plugin in role.plugins:
        ready = runtime_dir / f"{plugin}.sock"
        base = [python, "-m", _AGENTS[plugin]]
        agent = [*base, "--plugin", plugin, "--ready", str(ready), "--store", str(disk.diagnostic_store)]
        if plugin == "Diagnostics":
            agent += [
                "--role-logs",
                str(disk.role_resources),
                "--root-pid",
                str(bootstrapper_pid),
                "--interval",
                f"{settings.diagnostics_interval:g}",
            ]
        if plugin == "RemoteAccess":
            agent += ["--vm-root", str(disk.root), "--deployment-id", disk.deployment_id, "--role", disk.role]
            agent += ["--instance", disk.instance_id, "--instance-id", environment.current_instance.id]
            agent += ["--state-dir", state_dir] + (["--user", str(vm_uid)] if vm_uid is not None else [])
        variables = tuple(
            TaskVariable(
                name=setting_variable(name),
                xpath=(
                    "/RoleEnvironment/CurrentInstance/ConfigurationSettings/"
                    f"ConfigurationSetting[@name='{name}']/@value"
                ),
            )
            for name in PLUGIN_SETTINGS.get(plugin, ())
            if name in environment.settings
        )
        block = [*base, "/blockStartup", "--plugin", plugin, "--ready", str(ready)]
        block += ["--timeout", f"{PLUGIN_INIT_TIMEOUT:g}"]
        plans.append(
            TaskPlan(
                command_line=shlex.join(agent),
                task_type="background",
                elevated=True,
                variables=variables,
                origin=plugin,
            )
        )
        plans.append(
            TaskPlan(command_line=shlex.join(block), task_type="simple", elevated=True, origin=plugin)
        )
    return plans


def startup_plan(
    role: RoleDefinition,
    environment: RoleEnvironmentData,
    *,
    disk: VmDisk,
    settings: Settings,
    python: str,
    runtime_dir: Path,
    bootstrapper_pid: int,
    vm_uid: int | None = None,
    state_dir: str = "",
) -> list[TaskPlan]:
    """Every startup task of the role in the order they run: plugin tasks, then the role's own."""
    plugin_tasks = expand_plugins(
        role,
        environment,
        disk=disk,
        settings=settings,
        python=python,
        runtime_dir=runtime_dir,
        bootstrapper_pid=bootstrapper_pid,
        vm_uid=vm_uid,
        state_dir=state_dir,
    )
    return plugin_tasks + [TaskPlan.from_definition(task) for task in role.startup]
