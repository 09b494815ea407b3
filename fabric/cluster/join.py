"""The join port: where a host with no certificate yet buys one with a bootstrap token, and
where a host with one renews it.

It listens beside the controller's host port (``PORT + 1``; the host port itself takes mutual
TLS only). TLS 1.3, the controller's certificate from the cluster CA; a client certificate is
asked for but optional. One request and one answer per connection, each a length-prefixed
JSON message:

- ``GetCA`` -> ``CAInfo``: the CA certificate. A new host fetches it over a connection it
  cannot verify yet, and trusts it only when its public key hash is the one it was given
  (``--ca-hash``), as kubeadm pins its CA. It sends its token only after that, over a second
  connection that verifies the controller's certificate (chain and address) against that CA.
- ``Join`` (token, certificate request, cores, fault domain) -> ``Signed`` or ``Refused``.
- ``Renew`` (a certificate request), on a connection that shows the host's current client
  certificate: signed for the name that certificate carries, and for no other.
- ``HangState`` (a hang's id), on a connection that shows a host's certificate: whether a hang
  of that host's own processes was undone before its end (its backstop, the one process of the
  host still running, asks: fabric.cluster.hang_end).

The host's key is made on the host and never leaves it: only its certificate request travels.
"""

from __future__ import annotations

import inspect
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
from anyio.streams.tls import TLSAttribute, TLSStream

from fabric.cluster.ca import CAError, ClusterCA, public_key_hash, validity
from fabric.cluster.revocations import Revocations, peer_serial
from fabric.cluster.tokens import TokenRefused, TokenStore

log = logging.getLogger("fabric.cluster")

#: the largest message either side accepts (a CSR or a certificate is about 1 KB)
MESSAGE_LIMIT = 64 * 1024
#: a connection to the join port must finish within this
JOIN_TIMEOUT = 10.0
#: connections the join port serves at once (anyone may connect: it is before any credential);
#: one past that is closed at once, so that a flood of silent connections holds at most this
#: many descriptors of the controller's process, each for at most JOIN_TIMEOUT
MAX_CONNECTIONS = 64


class GetCA(msgspec.Struct, frozen=True, tag=True):
    """Ask for the CA certificate (anyone may: it is public)."""


class Join(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A host's bootstrap: its token, its certificate request (CN = its name), what it offers."""

    token: str
    csr: str
    cores: int
    fault_domain: int = 0
    memory_mb: int = 0


class Renew(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A joined host's renewal, on a connection showing its current certificate."""

    csr: str


class HangState(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A hung host's backstop: was hang ``id`` of this host undone?"""

    id: str


class HangAnswer(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Whether the hang was undone (the host is to resume now)."""

    undone: bool


class CAInfo(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """The CA certificate, PEM."""

    ca: str


class Signed(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A certificate for the host, the CA's, and the host port to link to from now on."""

    name: str
    cert: str
    ca: str
    host_port: int


class Refused(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Why the request was refused (one line)."""

    reason: str


Message = GetCA | Join | Renew | HangState | CAInfo | Signed | Refused | HangAnswer


class JoinRefused(Exception):
    """The controller (or the pinned CA) refused the host; the message is one line."""


class JoinUnreachable(JoinRefused):
    """The join port did not answer (connection refused or reset, closed, timed out): it may
    answer if asked again, unlike a refusal."""


async def _send(stream: anyio.abc.ByteStream, message: Message) -> None:
    data = msgspec.json.encode(message)
    await stream.send(len(data).to_bytes(4, "big") + data)


async def _receive(stream: anyio.abc.ByteStream) -> Message:
    buffer = b""
    while True:
        if len(buffer) >= 4:
            size = int.from_bytes(buffer[:4], "big")
            if size > MESSAGE_LIMIT:
                raise ValueError(f"a {size}-byte message is over the {MESSAGE_LIMIT}-byte limit")
            if len(buffer) >= 4 + size:
                return msgspec.json.decode(buffer[4 : 4 + size], type=Message)
        chunk = await stream.receive()
        buffer += chunk


# -- the controller's side ---------------------------------------------------------------------


class HostJoined(msgspec.Struct, frozen=True, kw_only=True):
    """A host that joined (or renewed), as the controller records it."""

    name: str
    cores: int
    fault_domain: int
    memory_mb: int
    address: str
    joined: float
    cert_expires: float


@dataclass
class JoinService:
    """Answers the join port: checks tokens, signs certificate requests.

    Args:
        ca: the cluster CA.
        tokens: the bootstrap tokens.
        host_port: the controller's host port (sent to a joined host).
        lifetime: how long a host certificate is valid, in seconds.
        on_joined: called with each host that joined or renewed.
    """

    ca: ClusterCA
    tokens: TokenStore
    host_port: int
    lifetime: float
    on_joined: Callable[[HostJoined], object] = lambda joined: None
    #: whether a hang of a host's own processes, (host name, hang id), was undone
    hang_undone: Callable[[str, str], bool] = lambda host, hang: False
    #: the certificates signed, and those revoked (None: not kept)
    revocations: Revocations | None = None
    #: whether a joined host holds the name (a join may not take it over)
    held: Callable[[str], bool] = lambda name: False
    #: the connections being served now, and when a refused one was last logged
    open_connections: int = field(default=0, init=False)
    _refusal_logged: float = field(default=-60.0, init=False)

    async def handle(self, request: Message, peer_cert: dict[str, Any] | None, address: str) -> Message:
        """The answer to one request."""
        match request:
            case GetCA():
                return CAInfo(ca=self.ca.cert_pem.decode())
            case Join():
                if not 1 <= request.cores <= 4096 or not 0 <= request.fault_domain <= 1_000_000:
                    return Refused(reason="cores must be 1-4096 and the fault domain 0 or more")
                try:
                    record = await anyio.to_thread.run_sync(self.tokens.check, request.token)
                    name, cert = self.ca.sign_request(request.csr.encode(), self.lifetime)
                except (TokenRefused, CAError) as exc:
                    log.warning("refused a join from %s: %s", address, exc)
                    return Refused(reason=str(exc))
                if self.held(name):
                    log.warning(
                        "refused a join from %s: host name %r is held by a joined host", address, name
                    )
                    return Refused(
                        reason=f"host name {name!r} is held by a joined host; forget that host first "
                        f"with `fabric host remove {name}` (it revokes its certificate), or join under another --name"
                    )
                log.info("host %r joined from %s with token %s", name, address, record.id)
                await self._joined(
                    name, request.cores, request.fault_domain, request.memory_mb, address, cert
                )
                return Signed(
                    name=name, cert=cert.decode(), ca=self.ca.cert_pem.decode(), host_port=self.host_port
                )
            case Renew():
                names = _names(peer_cert)
                if not names:
                    return Refused(reason="a renewal must show the host's current certificate")
                if self._revoked(peer_cert, names[0]):
                    return Refused(
                        reason=f"the certificate of host {names[0]!r} was revoked (fabric host remove)"
                    )
                try:
                    name, cert = self.ca.sign_request(request.csr.encode(), self.lifetime, renewal=True)
                except CAError as exc:
                    return Refused(reason=str(exc))
                if name not in names:
                    log.warning("refused a renewal from %s: %r asked for %r", address, names[0], name)
                    return Refused(reason=f"a host may only renew its own name ({names[0]!r}), not {name!r}")
                log.info("renewed the certificate of host %r", name)
                await self._joined(name, 0, 0, 0, address, cert)
                return Signed(
                    name=name, cert=cert.decode(), ca=self.ca.cert_pem.decode(), host_port=self.host_port
                )
            case HangState(id=hang):
                names = _names(peer_cert)
                if not names or self._revoked(peer_cert, names[0]):
                    return Refused(reason="ask about a hang with the host's (unrevoked) certificate")
                return HangAnswer(undone=self.hang_undone(names[0], hang))
        return Refused(reason=f"the join port does not answer {type(request).__name__}")

    def _revoked(self, peer_cert: dict[str, Any] | None, name: str) -> bool:
        r = self.revocations
        return r is not None and (r.is_revoked(peer_serial(peer_cert)) or r.removed(name))

    async def _joined(
        self, name: str, cores: int, fault_domain: int, memory_mb: int, address: str, cert: bytes
    ) -> None:
        if self.revocations is not None:  # before the host has it: a removal then revokes it
            expires = validity(cert)[1].timestamp()
            await anyio.to_thread.run_sync(self.revocations.record, name, cert, expires)
        recorded = self.on_joined(
            HostJoined(
                name=name,
                cores=cores,
                fault_domain=fault_domain,
                memory_mb=memory_mb,
                address=address,
                joined=time.time(),
                cert_expires=validity(cert)[1].timestamp(),
            )
        )
        if inspect.isawaitable(recorded):  # written before the host hears it joined
            await recorded

    async def serve(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` until cancelled; reports the port once listening."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
        async with listener:
            bound = listener.extra(anyio.abc.SocketAttribute.local_port)
            log.info("join port open on %s:%d", host, bound)
            task_status.started(bound)
            await listener.serve(lambda stream: self._connection(stream, context))

    async def _connection(self, stream: anyio.abc.SocketStream, context: ssl.SSLContext) -> None:
        address = "{}:{}".format(*stream.extra(anyio.abc.SocketAttribute.remote_address)[:2])
        if self.open_connections >= MAX_CONNECTIONS:
            if time.monotonic() - self._refusal_logged >= 10.0:  # a flood is one line, not one each
                self._refusal_logged = time.monotonic()
                log.warning(
                    "the join port serves %d connections already: closing the one from %s (and more)",
                    self.open_connections,
                    address,
                )
            await stream.aclose()
            return
        self.open_connections += 1
        try:
            await self._served(stream, context, address)
        finally:
            self.open_connections -= 1

    async def _served(self, stream: anyio.abc.SocketStream, context: ssl.SSLContext, address: str) -> None:
        try:
            with anyio.fail_after(JOIN_TIMEOUT):
                tls = await TLSStream.wrap(
                    stream, server_side=True, ssl_context=context, standard_compatible=False
                )
                try:
                    request = await _receive(tls)
                    peer = tls.extra(TLSAttribute.peer_certificate)
                    await _send(tls, await self.handle(request, peer, address))
                finally:
                    await tls.aclose()
        except (
            OSError,
            ssl.SSLError,
            ValueError,
            msgspec.ValidationError,
            msgspec.DecodeError,
            TimeoutError,
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ) as exc:
            log.warning(
                "a connection to the join port from %s failed: %s", address, str(exc) or type(exc).__name__
            )
        finally:
            await stream.aclose()


def _names(peer_cert: dict[str, Any] | None) -> list[str]:
    if not peer_cert:
        return []
    names = [str(v) for rdn in peer_cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    return names + [str(v) for k, v in peer_cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")]


def server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """The join port's TLS: the controller's certificate; a client one asked for, optional."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_OPTIONAL
    context.num_tickets = 0
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    return context


# -- the host's side ---------------------------------------------------------------------------


async def _ask(
    host: str, port: int, context: ssl.SSLContext, request: Message, server_name: str | None
) -> Message:
    where = f"{host}:{port}"
    try:
        with anyio.fail_after(JOIN_TIMEOUT):
            stream = await anyio.connect_tcp(
                host, port, ssl_context=context, tls_standard_compatible=False, tls_hostname=server_name
            )
            async with stream:
                await _send(stream, request)
                return await _receive(stream)
    except ssl.SSLCertVerificationError as exc:
        raise JoinRefused(f"the controller at {where} is not the one pinned: {exc.verify_message}") from None
    except TimeoutError:
        raise JoinUnreachable(f"the join port {where} did not answer within {JOIN_TIMEOUT:g} s") from None
    except anyio.EndOfStream:
        raise JoinUnreachable(
            f"the join port {where} closed the connection without an answer (see the controller's log)"
        ) from None
    except socket.gaierror as exc:  # a name that does not resolve: asking again will not help
        raise JoinRefused(f"cannot reach the join port {where}: {exc}") from None
    except (OSError, ssl.SSLError, anyio.BrokenResourceError) as exc:
        why = "the connection dropped" if isinstance(exc, anyio.BrokenResourceError) else exc
        raise JoinUnreachable(
            f"cannot reach the join port {where}: {str(why) or type(exc).__name__}"
        ) from None
    except (ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise JoinRefused(f"the join port {where} answered nonsense: {exc}") from None


def _client_context(ca_pem: bytes | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if ca_pem is None:
        # Only to fetch the CA certificate, which is trusted by its hash, not by this connection.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca_pem.decode())
    return context


async def fetch_ca(host: str, port: int, ca_hash: str) -> bytes:
    """The CA certificate of the controller at ``host:port`` (its join port), checked against
    the pinned hash.

    Raises:
        JoinRefused: unreachable, or its CA's public key hash is not ``ca_hash``.
    """
    from cryptography import x509

    answer = await _ask(host, port, _client_context(), GetCA(), None)
    if not isinstance(answer, CAInfo):
        raise JoinRefused(f"the join port {host}:{port} did not send its CA certificate")
    ca_pem = answer.ca.encode()
    try:
        got = public_key_hash(x509.load_pem_x509_certificate(ca_pem))
    except ValueError:
        raise JoinRefused(f"the join port {host}:{port} sent a CA certificate that does not parse") from None
    if got != ca_hash:
        raise JoinRefused(
            f"the CA of {host}:{port} has public key hash {got}, not the pinned {ca_hash}: "
            "check --ca-hash (`fabric token create` prints it) and the address"
        )
    return ca_pem


async def join(host: str, port: int, ca_pem: bytes, request: Join) -> Signed:
    """Send the token and certificate request over TLS verified against the pinned CA.

    Raises:
        JoinRefused: the controller refused (bad, expired or revoked token; bad request).
    """
    answer = await _ask(host, port, _client_context(ca_pem), request, host)
    return _signed(answer, host, port)


async def renew(host: str, port: int, ca_pem: bytes, cert: Path, key: Path, csr: bytes) -> Signed:
    """Renew over TLS that shows the current certificate (it must still be valid).

    Raises:
        JoinRefused: refused, or the controller unreachable.
    """
    context = _client_context(ca_pem)
    context.load_cert_chain(cert, key)
    answer = await _ask(host, port, context, Renew(csr=csr.decode()), host)
    return _signed(answer, host, port)


async def hang_undone(host: str, port: int, ca_pem: bytes, cert: Path, hang: str) -> bool:
    """Whether the controller undid hang ``hang`` of this host (asked with its certificate).

    Raises:
        JoinRefused: refused, or the controller unreachable.
    """
    context = _client_context(ca_pem)
    context.load_cert_chain(cert, cert)
    answer = await _ask(host, port, context, HangState(id=hang), host)
    if not isinstance(answer, HangAnswer):
        raise JoinRefused(f"the join port {host}:{port} did not answer about the hang: {answer}")
    return answer.undone


def _signed(answer: Message, host: str, port: int) -> Signed:
    if isinstance(answer, Refused):
        raise JoinRefused(f"the controller at {host}:{port} refused: {answer.reason}")
    if not isinstance(answer, Signed):
        raise JoinRefused(f"the join port {host}:{port} answered {type(answer).__name__}")
    return answer


def renewal_delay(not_before: float, not_after: float) -> float:
    """Seconds from now until a renewal, at a random point between 70% and 90% of the
    certificate's life (kubelet's jitter: many hosts do not all renew at once)."""
    life = not_after - not_before
    return max(0.0, not_before + life * random.uniform(0.7, 0.9) - time.time())
