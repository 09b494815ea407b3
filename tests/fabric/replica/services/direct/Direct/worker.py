"""A worker answering HTTP on its instance input endpoint: 200 and its instance id."""

import anyio
import anyio.abc

from roles import RoleEntryPoint, RoleEnvironment


class DirectWorker(RoleEntryPoint):
    async def run(self) -> None:
        me = RoleEnvironment.current_instance
        host, port = me.instance_endpoints["Http"].ip_endpoint
        body = me.id.encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()

        async def answer(client: anyio.abc.SocketStream) -> None:
            async with client:
                try:
                    with anyio.fail_after(5):
                        await client.receive()
                        await client.send(head + body)
                except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return

        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        await listener.serve(answer)
