"""A hostile or broken peer on a network link is refused or cut off, and logged, and the other
links keep working: garbage, a huge frame, slowloris, wrong CA, expired or no certificate."""

from __future__ import annotations

import socket
import ssl
import sys
from pathlib import Path

import anyio
import msgspec
import pytest

from actors import LinkOptions, LinkRefused, open_system
from actors._connector import attempt, open_tcp
from actors._net import PROTOCOL_VERSION, Hello, read_hello, send_hello
from actors._tls import TLSChannel
from actors._wire import Kind, append_frame
from tests.actors.tls_certs import CA
from tests.actors.tls_kit import OPTIONS, Cluster, cluster

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


async def read_until_closed(sock: socket.socket, seconds: float = 10.0) -> None:
    """Wait until the server closes the connection (EOF or reset), within a deadline."""
    sock.setblocking(False)
    with anyio.fail_after(seconds):
        while True:
            try:
                if not sock.recv(65536):
                    return
            except BlockingIOError:
                await anyio.wait_readable(sock)
            except ConnectionResetError:
                return


async def tls_session(c: Cluster, name: str) -> TLSChannel:
    """A TLS session with the controller, with a good certificate, before any hello."""
    tls = c.ca.client(name)
    channel = TLSChannel(
        await open_tcp(*c.listener.address), tls.context(), server_side=False, server_hostname="controller"
    )
    await channel.handshake()
    return channel


async def test_garbage_instead_of_tls_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with cluster(tmp_path) as c:
        with socket.create_connection(c.listener.address) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: controller\r\n\r\n" * 10)
            await read_until_closed(sock)
        await c.still_works()
    assert "refused a link from 127.0.0.1" in caplog.text


async def test_a_silent_connection_is_cut_off_at_the_handshake_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(tmp_path) as c:
        with socket.create_connection(c.listener.address) as silent:
            silent.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
            await c.still_works()  # meanwhile
            await read_until_closed(silent, OPTIONS.handshake_timeout + 10)
    assert "no TLS handshake and hello within 1 s" in caplog.text


async def test_a_node_that_never_says_hello_is_cut_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(tmp_path) as c:
        channel = await tls_session(c, "mute")
        with anyio.fail_after(OPTIONS.handshake_timeout + 10):
            assert await channel.receive_some() == b""
        channel.close()
    assert "no TLS handshake and hello within" in caplog.text


async def test_a_huge_frame_cuts_the_link_of_its_sender_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(tmp_path) as c:
        tls = c.ca.client("huge")
        context = tls.context()
        channel, hello = await attempt(c.listener.address, context, tls, "huge", OPTIONS)
        assert hello == Hello(PROTOCOL_VERSION, "controller")
        channel.send(b"\xff\xff\xff\xf0" + b"x" * 1000)  # a 4 GB length prefix
        with anyio.fail_after(10):
            while await channel.receive_some():
                pass  # until the controller hangs up
        channel.close()
        await c.still_works()
    assert "node 'huge' sent a bad frame (frame of 4294967280 bytes exceeds" in caplog.text


async def test_garbage_frames_cut_the_link_of_their_sender_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(tmp_path) as c:
        channel = await tls_session(c, "noisy")
        await send_hello(channel, "noisy")
        await read_hello(channel, "controller")
        channel.send(b"\x00\x00\x00\x05" + b"\xc1" * 5)  # a frame that is not msgpack
        with anyio.fail_after(10):
            while await channel.receive_some():
                pass
        channel.close()
        await c.still_works()
    assert "node 'noisy' sent a bad frame (malformed frame" in caplog.text


async def test_a_certificate_from_another_ca_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(tmp_path) as c:
        stranger = CA.make(tmp_path / "other", "other CA")
        tls = stranger.client("intruder", trust=c.ca)
        with pytest.raises(LinkRefused, match=r"refused our certificate: .*unknown ca"):
            await c.system.connect(c.listener.address, tls=tls, name="intruder", options=OPTIONS)
        await c.still_works()
    assert "refused a link from 127.0.0.1" in caplog.text
    assert "certificate verify failed: unable to get local issuer certificate" in caplog.text


async def test_a_server_from_another_ca_is_not_trusted(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        stranger = CA.make(tmp_path / "other", "other CA")
        tls = c.ca.client("good-2", trust=stranger)
        with pytest.raises(LinkRefused, match=r"is not trusted \(as 'controller'\): .*certificate"):
            await c.system.connect(c.listener.address, tls=tls, name="good-2", options=OPTIONS)
        await c.still_works()


async def test_a_server_with_another_name_is_not_trusted(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        tls = c.ca.client("good-3", server_name="not-the-controller")
        with pytest.raises(LinkRefused, match=r"not trusted \(as 'not-the-controller'\).*mismatch"):
            await c.system.connect(c.listener.address, tls=tls, name="good-3", options=OPTIONS)


async def test_an_expired_certificate_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with cluster(tmp_path) as c:
        tls = c.ca.client("late", expired=True)
        with pytest.raises(LinkRefused, match=r"refused our certificate: .*certificate expired"):
            await c.system.connect(c.listener.address, tls=tls, name="late", options=OPTIONS)
        await c.still_works()
    assert "certificate verify failed: certificate has expired" in caplog.text


async def test_no_client_certificate_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with cluster(tmp_path) as c:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=c.ca.ca_path)
        channel = TLSChannel(
            await open_tcp(*c.listener.address), context, server_side=False, server_hostname="controller"
        )
        await channel.handshake()  # TLS 1.3: our side is done before the server judges us
        await send_hello(channel, "anonymous")
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            await read_hello(channel, "controller")
        channel.close()
        await c.still_works()
    assert "refused a link from 127.0.0.1" in caplog.text


async def test_a_node_must_use_the_name_its_certificate_carries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(tmp_path) as c:
        tls = c.ca.client("host-2")
        with pytest.raises(LinkRefused, match="refused the link: node 'good' shows a certificate for host-2"):
            await c.system.connect(c.listener.address, tls=tls, name="good", options=OPTIONS)
        await c.still_works()
    assert "a node must use the name its certificate carries" in caplog.text


async def test_a_node_cannot_make_another_import_a_module(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert "tabnanny" not in sys.modules  # a module of the standard library nobody imports here
    async with cluster(tmp_path) as c:
        channel = await tls_session(c, "importer")
        await send_hello(channel, "importer")
        await read_hello(channel, "controller")
        frame = bytearray()
        append_frame(frame, Kind.TELL, 0, {}, "tabnanny:Whatever", "echo")
        channel.send(frame)
        with anyio.fail_after(10):
            while await channel.receive_some():
                pass  # the controller hangs up
        channel.close()
        await c.still_works()
    assert "tabnanny" not in sys.modules
    assert "unknown message type 'tabnanny:Whatever': its module is not imported on this node" in caplog.text


async def test_connections_past_the_handshake_bound_are_closed_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = CA.make(tmp_path)
    options = LinkOptions(handshake_timeout=30.0, max_handshakes=1)
    async with open_system() as system:
        listener = await system.listen("127.0.0.1", 0, tls=ca.server(), name="controller", options=options)
        with (
            socket.create_connection(listener.address) as first,
            socket.create_connection(listener.address) as second,
        ):
            await read_until_closed(second, 10)  # long before the first one's 30 s deadline
            first.setblocking(False)
            with pytest.raises(BlockingIOError):
                first.recv(1)  # the first one still waits for its handshake
    assert "1 links are being set up already: closing the one from 127.0.0.1" in caplog.text


@pytest.mark.parametrize(
    ("name", "bodies", "logged"),
    [
        ("", b"\xdd\x00\x00\x00\x05\xc1", "malformed frame"),  # not msgpack
        (
            "",
            b"\xdd\xff\xff\xff\xff\x01",
            "malformed frame: Input data was truncated",
        ),  # a count past its end
        ("actors._wire:Started", b"\xdd\x00\x00\x00\x01\x01", "cannot decode actors._wire:Started messages"),
        ("tabnanny:Whatever", b"\xdd\x00\x00\x00\x01\x80", "its module is not imported on this node"),
    ],
)
async def test_a_bad_tells_frame_cuts_the_link_of_its_sender_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, bodies: bytes, logged: str
) -> None:
    async with cluster(tmp_path) as c:
        channel = await tls_session(c, "batcher")
        await send_hello(channel, "batcher")
        await read_hello(channel, "controller")
        payload = b"\x95" + bytes([Kind.TELLS, 0]) + msgspec.msgpack.encode(name) + b"\xa4echo" + bodies
        channel.send(len(payload).to_bytes(4, "big") + payload)
        with anyio.fail_after(10):
            while await channel.receive_some():
                pass  # the controller hangs up
        channel.close()
        await c.still_works()
    assert "node 'batcher' sent a bad frame" in caplog.text
    assert logged in caplog.text
    assert "tabnanny" not in sys.modules
