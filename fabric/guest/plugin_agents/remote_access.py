"""The RemoteAccess and RemoteForwarder plugin agent: ``python -m fabric.guest.plugin_agents.remote_access``.

It records the plugin's settings (``Microsoft.WindowsAzure.Plugins.<plugin>.*``, never the
password itself) in ``DiagnosticStore/RemoteAccess/<plugin>.json`` and stays running beside the
role, as the RDP agent did. The RemoteAccess agent also serves remote sessions (`fabric exec`)
as the role's account: see remote_exec. With ``/blockStartup`` it only waits until the agent has
initialised.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from fabric.guest.disk import VmDisk
from fabric.guest.plugin_agents._ready import run_agent, serve_ready
from fabric.guest.plugin_agents.remote_exec import EXEC_SOCKET, Account, Vm, serve_exec

_SECRET = ("Password",)


def recorded_settings(plugin: str, environ: dict[str, str]) -> dict[str, str]:
    """The plugin's settings from the environment, secrets replaced by whether they are set."""
    prefix = f"Microsoft_WindowsAzure_Plugins_{plugin}_"
    found: dict[str, str] = {}
    for key, value in sorted(environ.items()):
        if key.startswith(prefix):
            name = key[len(prefix) :]
            found[name] = "(set)" if any(s in name for s in _SECRET) and value else value
    return found


def session_options(rest: list[str]) -> argparse.Namespace:
    """Where the RemoteAccess agent's sessions run (see remote_exec): the VM and its account."""
    parser = argparse.ArgumentParser(prog="remote_access")
    parser.add_argument("--vm-root", default="")
    parser.add_argument("--deployment-id", default="")
    parser.add_argument("--role", default="")
    parser.add_argument("--instance", default="", help="the VM's name")
    parser.add_argument("--instance-id", default="", help="the instance's Azure id")
    parser.add_argument("--state-dir", default="")
    parser.add_argument("--user", type=int, default=None, help="the VM's account")
    return parser.parse_args(rest)


async def agent(options: argparse.Namespace, rest: list[str]) -> None:
    """Record the settings, open the sessions' socket (RemoteAccess), tell the /blockStartup
    task, then keep running."""
    folder = Path(options.store) / "RemoteAccess"
    folder.mkdir(parents=True, exist_ok=True)
    settings = recorded_settings(options.plugin, dict(os.environ))
    state = {"plugin": options.plugin, "pid": os.getpid(), "settings": settings}
    (folder / f"{options.plugin}.json").write_text(json.dumps(state, indent=2) + "\n")
    enabled = settings.get("Enabled", "false").lower() == "true"
    where = session_options(rest)
    async with anyio.create_task_group() as tasks:
        if options.plugin == "RemoteAccess" and where.vm_root:
            disk = VmDisk(Path(where.vm_root), where.deployment_id, where.role, where.instance)
            vm = Vm(disk, where.user, where.state_dir, where.instance_id)
            account = Account.from_environ(dict(os.environ))
            socket = Path(options.ready).with_name(EXEC_SOCKET)
            tasks.start_soon(serve_exec, socket, vm, account, folder / "Sessions.log")
        print(f"{options.plugin} agent initialised (enabled: {enabled})", flush=True)
        await serve_ready(Path(options.ready), lambda: state, task_status=anyio.TASK_STATUS_IGNORED)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent, or with /blockStartup wait for it."""
    return run_agent(argv, "The RemoteAccess / RemoteForwarder plugin agent.", agent)


if __name__ == "__main__":
    sys.exit(main())
