"""A role that only runs: the instance is there to be reached with `fabric exec`."""

import anyio

from roles import RoleEntryPoint


class Idle(RoleEntryPoint):
    async def run(self) -> None:
        await anyio.sleep_forever()
