"""TLS for network links: the cluster's certificates, and a TLS session that a link drives as it
drives a raw socket.

A link reads its socket raw and non-blocking from the task that wants the next frame (see
_reader): every scheduler pass it skips shows on an ask's round trip. A stream object (anyio's
TLSStream, trio's SSLStream) would put an await and a task hand-over on every read, so the
session here is an ssl.SSLObject over two memory BIOs on the raw socket, behind the socket's
own interface (TLSChannel.recv and send raise BlockingIOError when they would block).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Final

import anyio

logger = logging.getLogger("actors.net")

Path = str | os.PathLike[str]

#: TLS records carry at most this much plaintext: each read takes one whole record.
RECORD_SIZE: Final = 16 * 1024
#: Raw bytes read off the socket at once.
RAW_READ_SIZE: Final = 256 * 1024


class LinkRefused(ConnectionError):
    """A network link could not be set up: a certificate or the hello was refused (the message
    says which, and by whom)."""


def _load(context: ssl.SSLContext, cert: Path, key: Path, ca: Path) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the certificate {os.fspath(cert)!r} with its key: {exc}") from None
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the CA certificate {os.fspath(ca)!r}: {exc}") from None


@dataclass(frozen=True)
class ServerTLS:
    """The listening side of a link: its certificate and key, and the cluster's CA, whose
    certificate every client must show (mutual TLS, TLS 1.3 only)."""

    cert: Path
    key: Path
    ca: Path

    def context(self) -> ssl.SSLContext:
        """A server context; reads the files (call it off the event loop)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.verify_mode = ssl.CERT_REQUIRED
        context.num_tickets = 0  # links do not resume sessions
        _load(context, self.cert, self.key, self.ca)
        return context


@dataclass(frozen=True)
class ClientTLS:
    """The connecting side of a link: its certificate and key, the cluster's CA, and the name
    the server's certificate must carry (checked, as a browser checks a host name)."""

    cert: Path
    key: Path
    ca: Path
    server_name: str

    def context(self) -> ssl.SSLContext:
        """A client context; reads the files (call it off the event loop)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its name
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        _load(context, self.cert, self.key, self.ca)
        return context


def describe_tls_error(exc: BaseException) -> str:
    """A one-line reason for a TLS failure, the verifier's own words when it has them."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__


class TLSChannel:
    """A TLS session over a connected non-blocking socket, with the socket's interface.

    ``send`` encrypts what it is given and writes the records; when the socket takes only part
    of them, the rest waits here and ``send`` reports one byte fewer than it took, so that its
    caller (which always comes back with what was not taken) calls again and the records go
    out then. ``recv`` decrypts whatever the socket has; a partial record raises
    BlockingIOError like an empty socket.
    """

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._backlog = b""  # records not on the wire yet
        self._owed = 0  # plaintext bytes encrypted but not reported as sent (0 or 1)
        self._unread = b""  # plaintext read ahead of the link (after the hello)
        self._eof = False
        #: why the session failed, when it did (a TLS alert, a bad record)
        self.error: BaseException | None = None

    # -- the socket interface ----------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's descriptor."""
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        """A TLS channel is always non-blocking."""
        if flag:
            raise ValueError("a TLSChannel is non-blocking")

    def recv(self, size: int) -> bytes:
        """The plaintext the socket has now; b"" at the end; BlockingIOError when none."""
        if self._unread:
            data, self._unread = self._unread, b""
            return data
        if self._eof:
            return b""
        try:
            raw = self.sock.recv(RAW_READ_SIZE)
        except BlockingIOError:
            if not self._incoming.pending:
                raise  # nothing to read
            raw = None  # records that came with the end of the handshake: decrypt those
        if raw:
            self._incoming.write(raw)
        elif raw is not None:
            self._incoming.write_eof()
        parts: list[bytes] = []
        read, incoming = self._ssl.read, self._incoming
        try:
            while True:
                plain = read(RECORD_SIZE)
                if not plain:  # the peer's close_notify
                    self._eof = True
                    break
                parts.append(plain)
                if not incoming.pending and raw:
                    break  # every record read (a read more would only raise SSLWantReadError)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self._eof = True  # closed, cleanly or not: the end of the stream either way
        except ssl.SSLError as exc:
            self.error = exc
            raise
        if self._outgoing.pending:  # the session answered something (e.g. a key update)
            self._backlog += self._outgoing.read()
            self._push()
        if parts:
            return b"".join(parts) if len(parts) > 1 else parts[0]
        if self._eof or raw == b"":
            self._eof = True
            return b""
        raise BlockingIOError  # part of a record: the rest is still on its way

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt and write ``data``; return how much of it was taken (see the class)."""
        if self._backlog:
            self._push()
            if self._backlog:
                raise BlockingIOError
        skip, self._owed = self._owed, 0  # already encrypted and, by now, on the wire
        size = len(data)
        if skip >= size:
            return size
        self._ssl.write(memoryview(data)[skip:] if skip else data)
        self._backlog = self._outgoing.read()
        self._push()
        if self._backlog:
            self._owed = 1
            return size - 1
        return size

    def _push(self) -> None:
        try:
            sent = self.sock.send(self._backlog)
        except BlockingIOError:
            return
        self._backlog = self._backlog[sent:]

    def unread(self, data: bytes) -> None:
        """Hand plaintext read ahead back: the next recv returns it first."""
        self._unread = data + self._unread

    # -- setting up and closing --------------------------------------------------------------

    async def handshake(self) -> None:
        """Run the TLS handshake (the caller bounds how long it may take).

        Raises:
            ssl.SSLError: the handshake failed (certificate not trusted, wrong name, alert).
            ConnectionError: the peer closed the connection during it.
        """
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self.flush()
                await self._read_raw()
                continue
            await self.flush()
            return

    async def _read_raw(self) -> None:
        while True:
            try:
                raw = self.sock.recv(RAW_READ_SIZE)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
                continue
            if not raw:
                raise ConnectionResetError("the peer closed the connection during the TLS handshake")
            self._incoming.write(raw)
            return

    async def flush(self) -> None:
        """Write every record the session has made."""
        if self._outgoing.pending:
            self._backlog += self._outgoing.read()
        while self._backlog:
            self._push()
            if self._backlog:
                await anyio.wait_writable(self.sock)

    async def receive_some(self) -> bytes:
        """Wait for plaintext (during the hello, before the link's reader runs); b"" at the end."""
        while True:
            try:
                return self.recv(RAW_READ_SIZE)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)

    @property
    def peer_certificate(self) -> dict[str, Any]:
        """The peer's certificate as ssl's getpeercert() gives it (subject, serialNumber...)."""
        return dict(self._ssl.getpeercert() or {})

    @property
    def peer_names(self) -> list[str]:
        """The names the peer's certificate carries: its common name, then its DNS names."""
        cert: dict[str, Any] = dict(self._ssl.getpeercert() or {})
        names: list[str] = [
            str(value) for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"
        ]
        names += [str(value) for key, value in cert.get("subjectAltName", ()) if key == "DNS"]
        return names

    def cut(self) -> None:
        """Stop the connection both ways now: a reader or writer waiting on it wakes at the end."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Say goodbye (close_notify, if the socket takes it at once) and close the socket."""
        if self.sock.fileno() < 0:
            return
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._ssl.unwrap()
        if self._outgoing.pending:
            self._backlog += self._outgoing.read()
        with contextlib.suppress(OSError):
            self._push()
        self.sock.close()
