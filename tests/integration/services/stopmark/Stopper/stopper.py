"""A worker that appends "on_stop <instance>" to the file its Marker setting names when stopped."""

import anyio

from roles import RoleEntryPoint, RoleEnvironment


class Stopper(RoleEntryPoint):
    async def run(self) -> None:
        await anyio.sleep_forever()

    async def on_stop(self) -> None:
        with open(RoleEnvironment.get_config_setting("Marker"), "a") as out:
            out.write(f"on_stop {RoleEnvironment.current_instance.id}\n")
