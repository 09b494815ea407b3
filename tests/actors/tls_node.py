"""Another node for the network-link tests, run as a child process:

    python -m tests.actors.tls_node serve CERT KEY CA PORT BACKEND
    python -m tests.actors.tls_node connect CERT KEY CA PORT BACKEND

Both register an Echo actor as "echo". ``serve`` listens on 127.0.0.1:PORT as node
"controller" and prints ``port N`` once it does; ``connect`` links to the controller there as
node "host-1", tells the controller's "recorder" a Note, asks it another, and prints the answer. Each runs until
its standard input closes.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import msgspec

from actors import Actor, ClientTLS, LinkOptions, ServerTLS, open_system, register_error

FAST = LinkOptions(reconnect_min=0.05, reconnect_max=0.5, handshake_timeout=10.0)


@register_error("code")
class QuotaRefused(Exception):
    """A refusal with a code, which must keep its type across the link."""

    def __init__(self, code: int) -> None:
        super().__init__(f"refused with code {code}")
        self.code = code


class Refuse(msgspec.Struct, frozen=True):
    """Ask Echo to raise QuotaRefused(code)."""

    code: int


class Hang(msgspec.Struct, frozen=True):
    """Ask Echo for an answer that never comes."""


class Note(msgspec.Struct, frozen=True):
    """What the connecting child asks the test's recorder."""

    text: str


class Echo(Actor):
    """Answers with the message; Refuse raises, Hang never answers."""

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Refuse):
            raise QuotaRefused(message.code)
        if isinstance(message, Hang):
            await anyio.sleep_forever()
        return message


async def _wait_stdin_closed() -> None:
    await anyio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


async def main(mode: str, cert: str, key: str, ca: str, port: int) -> None:
    async with open_system() as system:
        system.register("echo", await system.spawn(Echo, name="echo"))
        if mode == "serve":
            listener = await system.listen(
                "127.0.0.1", port, tls=ServerTLS(cert, key, ca), name="controller", options=FAST
            )
            print(f"port {listener.address[1]}", flush=True)
        else:
            tls = ClientTLS(cert, key, ca, "controller")
            peer = await system.connect(("127.0.0.1", port), tls=tls, name="host-1", options=FAST)
            await peer.ref("recorder").tell(Note("told by host-1"))
            answer = await peer.ref("recorder").ask(Note("hello from host-1"))
            print(f"answer {answer}", flush=True)
        await _wait_stdin_closed()


if __name__ == "__main__":
    # Under its importable name, so that its messages carry it (not "__main__") on the wire.
    from tests.actors import tls_node

    mode, cert, key, ca, port, backend = sys.argv[1:7]
    anyio.run(tls_node.main, mode, cert, key, ca, int(port), backend=backend)
