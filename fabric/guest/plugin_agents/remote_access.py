"""The RemoteAccess and RemoteForwarder plugin agent: ``python -m fabric.guest.plugin_agents.remote_access``.

It records the plugin's settings (``Microsoft.WindowsAzure.Plugins.<plugin>.*``, never the
password itself) in ``DiagnosticStore/RemoteAccess/<plugin>.json`` and stays running beside the
role, as the RDP agent did. With ``/blockStartup`` it only waits until the agent has initialised.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from fabric.guest.plugin_agents._ready import run_agent, serve_ready

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


async def agent(options: argparse.Namespace, rest: list[str]) -> None:
    """Record the settings, tell the /blockStartup task, then keep running."""
    folder = Path(options.store) / "RemoteAccess"
    folder.mkdir(parents=True, exist_ok=True)
    settings = recorded_settings(options.plugin, dict(os.environ))
    state = {"plugin": options.plugin, "pid": os.getpid(), "settings": settings}
    (folder / f"{options.plugin}.json").write_text(json.dumps(state, indent=2) + "\n")
    enabled = settings.get("Enabled", "false").lower() == "true"
    print(f"{options.plugin} agent initialised (enabled: {enabled})", flush=True)
    await serve_ready(Path(options.ready), lambda: state, task_status=anyio.TASK_STATUS_IGNORED)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent, or with /blockStartup wait for it."""
    return run_agent(argv, "The RemoteAccess / RemoteForwarder plugin agent.", agent)


if __name__ == "__main__":
    sys.exit(main())
