"""The guestbook's store: keeps entries in memory, served on the internal "Store" endpoint.

A line protocol: ``LIST`` answers the entries as JSON; ``ADD "text"`` adds one and answers them.
"""

import json

import anyio

from roles import RoleEntryPoint, RoleEnvironment


class Store(RoleEntryPoint):
    async def on_start(self) -> bool:
        self.entries: list[str] = []
        self.limit = int(RoleEnvironment.get_config_setting("MaxEntries"))
        return True

    async def run(self) -> None:
        endpoint = RoleEnvironment.current_instance.instance_endpoints["Store"]
        listener = await anyio.create_tcp_listener(local_host=endpoint.host, local_port=endpoint.port)
        await listener.serve(self.handle)

    async def handle(self, conn) -> None:
        async with conn:
            data = b""
            while not data.endswith(b"\n"):
                try:
                    data += await conn.receive()
                except anyio.EndOfStream:
                    return
            command, _, argument = data.decode().strip().partition(" ")
            if command == "ADD" and argument:
                self.entries.append(json.loads(argument))
                del self.entries[: -self.limit]
            await conn.send(json.dumps(self.entries).encode() + b"\n")
