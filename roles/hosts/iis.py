"""WaIISHost: the role host process of a full IIS web role.

It runs the role's entry point exactly as WaWorkerHost does (a web role without a
RoleEntryPoint subclass gets the default one) and writes WaIISHost.log at the config's
log_path. The sites themselves are served by W3WP web workers that the bootstrapper starts
on the first request. Spawned as ``roles.hosts.iis:IISHost`` with one RoleHostConfig.
"""

from __future__ import annotations

from typing import ClassVar

from ._lifecycle import EntryPointHost


class IISHost(EntryPointHost):
    """WaIISHost: runs a full web role's RoleEntryPoint; its sites run in W3WP."""

    host_name: ClassVar[str] = "WaIISHost"
    entry_point_required: ClassVar[bool] = False
