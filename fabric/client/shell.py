"""A remote shell's WebSocket, from the client's side (wsproto over an anyio TCP stream): keys
in, screen out, window sizes and signals as control messages, the exit status at the end.

See fabric.frontend.remote.shell for the messages.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    RejectConnection,
    Request,
    TextMessage,
)

from fabric.client.asynchronous import AsyncFabricClient
from fabric.client.errors import ClientError
from fabric.client.tls import api_verify
from fabric.controller.messages import Slot
from fabric.frontend.auth import read_token


class ShellRefused(ClientError):
    """The fabric would not open the shell; the message says why, ``status`` as HTTP's."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ShellSession:
    """An open remote shell."""

    def __init__(self, stream: anyio.abc.ByteStream, ws: WSConnection) -> None:
        self._stream = stream
        self._ws = ws
        # Keys and window sizes come from different tasks; a stream takes one writer at a time.
        self._sending = anyio.Lock()
        self._pending: list[Event] = []
        self._text = ""
        self._bytes = b""
        #: the shell's exit status, once it has ended
        self.exit_status: int | None = None

    async def _send(self, event: Event) -> None:
        async with self._sending:
            await self._stream.send(self._ws.send(event))

    async def send_keys(self, data: bytes) -> None:
        """Type ``data`` on the remote terminal (b"\\x03" is Ctrl-C)."""
        await self._send(BytesMessage(data=data))

    async def resize(self, rows: int, cols: int) -> None:
        """Tell the remote terminal its new window size."""
        await self._send(TextMessage(data=json.dumps({"resize": [rows, cols]})))

    async def signal(self, name: str) -> None:
        """Send a signal ("INT", "TERM", "HUP", "QUIT") to the remote foreground process group."""
        await self._send(TextMessage(data=json.dumps({"signal": name})))

    async def _event(self) -> Event | None:
        while not self._pending:
            try:
                data = await self._stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return None
            self._ws.receive_data(data)
            self._pending.extend(self._ws.events())
        return self._pending.pop(0)

    async def receive(self) -> bytes | dict[str, object] | None:
        """The next screen output (bytes), control message (a dict), or None at the end."""
        while True:
            event = await self._event()
            match event:
                case None:
                    return None
                case BytesMessage(data=data, message_finished=done):
                    self._bytes += bytes(data)
                    if done:
                        out, self._bytes = self._bytes, b""
                        return out
                case TextMessage(data=data, message_finished=done):
                    self._text += data
                    if done:
                        control: dict[str, object] = json.loads(self._text)
                        self._text = ""
                        if isinstance(control.get("exit"), int):
                            self.exit_status = int(str(control["exit"]))
                        return control
                case CloseConnection():
                    return None

    async def output_until_exit(self) -> tuple[bytes, int | None]:
        """Everything the screen shows from now until the shell ends, and its exit status."""
        shown = b""
        while (item := await self.receive()) is not None:
            if isinstance(item, bytes):
                shown += item
        return shown, self.exit_status


@asynccontextmanager
async def open_shell(
    client: AsyncFabricClient, service: str, slot: Slot, instance: str, *, rows: int = 24, cols: int = 80
) -> AsyncIterator[ShellSession]:
    """Open a shell on ``instance`` (RemoteAccess must be enabled for its role).

    Raises:
        ShellRefused: no token (403), remote access not enabled (409), the account expired
            (403), no such instance (404).
    """
    url = urlsplit(client.url)
    token = read_token(client.state_dir) or ""
    path = f"{await client._services()}/{service}/deploymentslots/{slot}/roleinstances/{instance}/shell"
    target = f"{path}?rows={rows}&cols={cols}&term=xterm"
    verify = api_verify(client.state_dir, client.url)  # https: TLS, the pinned CA alone
    tls = verify if isinstance(verify, ssl.SSLContext) else None
    host, port = url.hostname or "127.0.0.1", url.port or (443 if tls else 80)
    stream: anyio.abc.ByteStream = (
        await anyio.connect_tcp(host, port)
        if tls is None
        else await anyio.connect_tcp(host, port, ssl_context=tls)
    )
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host=url.netloc, target=target, extra_headers=[(b"authorization", f"Bearer {token}".encode())]
        )
        await stream.send(ws.send(request))
        session = ShellSession(stream, ws)
        match await session._event():
            case AcceptConnection():
                pass
            case RejectConnection(status_code=status):
                raise ShellRefused(
                    f"the fabric refused the shell (HTTP {status}): is the token right?", status
                )
            case _:
                raise ShellRefused("the fabric closed the connection before the shell opened", 502)
        first = await session.receive()
        if not isinstance(first, dict) or "error" in (first or {}):
            why = first.get("error", "no answer") if isinstance(first, dict) else "no answer"
            code = first.get("status", 502) if isinstance(first, dict) else 502
            raise ShellRefused(str(why), int(str(code)))
        yield session
        if ws.state.name == "OPEN":
            with anyio.move_on_after(1):
                await stream.send(ws.send(CloseConnection(code=1000)))
