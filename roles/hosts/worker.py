"""WaWorkerHost: the role host process of a worker role.

It loads the role's entry point (the module the definition names, else the first module of
the role's code, in sorted order, that defines a RoleEntryPoint subclass) and runs on_start,
then run, reporting Ready as run starts; or it runs a ProgramEntryPoint command line instead.
The bootstrapper spawns it as ``roles.hosts.worker:WorkerHost`` with one RoleHostConfig.
"""

from __future__ import annotations

from typing import ClassVar

from ._lifecycle import EntryPointHost


class WorkerHost(EntryPointHost):
    """WaWorkerHost: runs a worker role's RoleEntryPoint (or ProgramEntryPoint)."""

    host_name: ClassVar[str] = "WaWorkerHost"
    entry_point_required: ClassVar[bool] = True
