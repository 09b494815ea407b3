"""The smallest worker role: greets every few seconds until it is stopped."""

import anyio

from roles import RoleEntryPoint, RoleEnvironment


class HelloWorker(RoleEntryPoint):
    async def on_start(self) -> bool:
        self.greeting = RoleEnvironment.get_config_setting("Greeting")
        print(f"{RoleEnvironment.current_instance.id}: starting", flush=True)
        return True

    async def run(self) -> None:
        beats = 0
        while True:
            beats += 1
            print(f"{self.greeting} (beat {beats})", flush=True)
            await anyio.sleep(5)

    async def on_stop(self) -> None:
        print(f"{RoleEnvironment.current_instance.id}: stopping", flush=True)
