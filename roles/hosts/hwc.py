"""WaWebHost (Hostable Web Core): a web role's entry point and its sites in one process.

After on_start returns True the host starts serving ``config.sites`` on the listening sockets
it inherited (``config.listen_fds``), then reports Ready and starts run, and sends itself a
warm-up request (GET /do.rd_runtime_init). On stop, the stopping event and on_stop run
first; the sites then finish their requests in flight and close. It writes WaWebHost.log at
the config's log_path. Spawned as ``roles.hosts.hwc:WebHost`` with one RoleHostConfig.
"""

from __future__ import annotations

from typing import ClassVar

from roles.protocol import RoleHostConfig

from ._common import describe
from ._lifecycle import EntryPointHost
from ._sites import SiteServer, warm_up, web_spec


class WebHost(EntryPointHost):
    """WaWebHost: runs a web role's RoleEntryPoint and serves its sites in the same process."""

    host_name: ClassVar[str] = "WaWebHost"
    entry_point_required: ClassVar[bool] = False

    def __init__(self, config: RoleHostConfig) -> None:
        """Build the host for ``config``; nothing runs until on_start."""
        super().__init__(config)
        self.sites: SiteServer | None = None

    async def before_ready(self) -> None:
        """Start serving the sites; raises if they cannot be served."""
        self.sites = SiteServer(web_spec(self.config, idle_timeout=None))
        binds = await self.start(self.sites.serve, self._sites_failed, name="sites")
        self.sites.binds = binds
        self.log.info("serving %s", ", ".join(f"{name} on {url}" for name, url in binds.items()))

    async def after_ready(self) -> None:
        """Warm the first site up in the background."""
        self.start_soon(self._warm_up, name="warm-up")

    async def after_role_stopped(self) -> None:
        """Stop the sites gracefully."""
        if self.sites is not None:
            await self.sites.stop()
            self.log.info("sites stopped")

    async def _warm_up(self) -> None:
        assert self.sites is not None
        try:
            status = await warm_up(self.sites.spec, self.sites.binds)
        except (OSError, TimeoutError) as error:
            self.log.warning("the warm-up request failed: %s", describe(error))
        else:
            self.log.info("warm-up request answered: %s", status)

    async def _sites_failed(self, error: BaseException) -> None:
        self.log.error("serving the sites failed", exc_info=error)
        await self.fail(f"serving the sites failed: {describe(error)}")
