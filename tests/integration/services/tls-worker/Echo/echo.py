"""A worker role serving TLS itself: it answers each connection with the instance's id, over
TLS with the certificate RoleEnvironment names (its key readable only if permissionLevel allows)."""

import ssl

import anyio
from anyio.streams.tls import TLSListener

from roles import RoleEntryPoint, RoleEnvironment


class Echo(RoleEntryPoint):
    async def on_start(self) -> bool:
        cert = RoleEnvironment.get_certificate("Ssl")
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            self.context.load_cert_chain(cert.path, cert.key_path)
        except PermissionError as error:
            print(f"cannot read the key of certificate Ssl: {error}", flush=True)
            return False
        return True

    async def run(self) -> None:
        host, port = RoleEnvironment.current_instance.instance_endpoints["HttpsIn"].ip_endpoint
        listener = TLSListener(
            await anyio.create_tcp_listener(local_host=host, local_port=port), self.context
        )

        async def answer(stream) -> None:
            async with stream:
                await stream.send(RoleEnvironment.current_instance.id.encode())

        await listener.serve(answer)
