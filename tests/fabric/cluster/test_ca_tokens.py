"""The cluster CA (kubeadm's public key hash, owner-only key, certificate requests checked) and
bootstrap tokens (stored hashed, expiring, revocable)."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from cryptography import x509

from fabric.cluster.ca import (
    CAError,
    ClusterCA,
    check_hash_format,
    csr_for,
    new_key,
    verify_signed_by,
    write_private,
)
from fabric.cluster.join import Join, JoinRefused, JoinService, join, renewal_delay, server_context
from fabric.cluster.tokens import TOKEN, TokenRefused, TokenStore, parse_ttl


def test_the_ca_is_made_once_with_an_owner_only_key_and_kubeadms_hash(tmp_path: Path) -> None:
    ca = ClusterCA.open(tmp_path / "cluster")
    assert stat.S_IMODE((tmp_path / "cluster" / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "cluster").stat().st_mode) == 0o700
    again = ClusterCA.open(tmp_path / "cluster")
    assert again.hash == ca.hash and check_hash_format(ca.hash) == ca.hash
    # kubeadm's recipe: openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(ca.cert_path)], capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey, capture_output=True, check=True
    ).stdout
    assert ca.hash == "sha256:" + hashlib.sha256(der).hexdigest()


def test_a_request_is_signed_for_its_own_name_and_a_bad_one_refused(tmp_path: Path) -> None:
    ca = ClusterCA.open(tmp_path)
    key = new_key()
    name, cert_pem = ca.sign_request(csr_for(key, "host-a"), 600)
    assert name == "host-a"
    cert = verify_signed_by(cert_pem, ca.cert_pem)
    assert cert.subject.rfc4514_string() == "CN=host-a"
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 600 <= life.total_seconds() <= 600 + 61  # backdated by a tenth of a short life at most
    with pytest.raises(CAError, match="host name"):
        ca.sign_request(csr_for(key, "Bad Name!"), 600)
    for reserved in ("controller", "127.0.0.2", "local-host1"):
        with pytest.raises(CAError, match="reserved"):
            ca.sign_request(csr_for(key, reserved), 600)
    with pytest.raises(CAError, match="not a PEM CSR"):
        ca.sign_request(b"garbage", 600)
    other = ClusterCA.open(tmp_path / "other")
    with pytest.raises(CAError, match="not signed by the cluster CA"):
        verify_signed_by(cert_pem, other.cert_pem)
    assert isinstance(x509.load_pem_x509_certificate(cert_pem), x509.Certificate)


def test_a_hash_must_look_like_one() -> None:
    with pytest.raises(CAError, match="sha256:"):
        check_hash_format("md5:1234")
    assert check_hash_format("SHA256:" + "A" * 64) == "sha256:" + "a" * 64


def test_tokens_are_stored_hashed_expire_and_can_be_revoked(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token, record = store.create(ttl=60, description="rack 2")
    assert TOKEN.match(token)
    token_id, secret = token.split(".")
    stored = (tmp_path / "tokens.json").read_text()
    assert token_id in stored and secret not in stored
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600
    assert store.check(token) == record
    assert [t.id for t in store.list()] == [token_id]
    with pytest.raises(TokenRefused, match="not valid"):
        store.check(f"{token_id}.{'0' * 16}")
    with pytest.raises(TokenRefused, match="malformed"):
        store.check("nope")
    assert store.delete(token_id) and not store.delete(token_id)
    with pytest.raises(TokenRefused, match="not valid"):
        store.check(token)
    short, _ = store.create(ttl=1)
    time.sleep(1.1)
    with pytest.raises(TokenRefused, match="expired"):
        store.check(short)
    assert store.list() == []


def test_ttls_and_renewal_points() -> None:
    assert parse_ttl("24h") == 86400 and parse_ttl("90s") == 90 and parse_ttl("15m") == 900
    for bad in ("0s", "2y", "soon", "400d"):
        with pytest.raises(ValueError):
            parse_ttl(bad)
    now = time.time()
    delays = [renewal_delay(now, now + 1000) for _ in range(200)]
    assert all(700 - 1 <= d <= 900 for d in delays)
    assert max(delays) - min(delays) > 100  # jittered, not one instant for every host


def test_files_written_at_once_from_two_threads_are_each_written_whole(tmp_path: Path) -> None:
    # The controller writes the roster of joined hosts from its event loop (a host joined) and
    # from a thread (each heartbeat interval): with one temporary name for both, one write's
    # rename found the file the other had renamed already, and the join was cut off unanswered.
    path = tmp_path / "cluster" / "hosts.json"
    contents = [bytes([65 + n]) * 4096 for n in range(4)]

    def write(n: int) -> None:
        for _ in range(200):
            write_private(path, contents[n])

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(write, n) for n in range(4)]:
            done.result()
    assert path.read_bytes() in contents
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["hosts.json"]  # no temporary file left


async def test_a_join_the_controller_fails_to_record_is_told_so_in_words(tmp_path: Path) -> None:
    ca = ClusterCA.open(tmp_path / "cluster")
    tokens = TokenStore(tmp_path / "cluster")
    token, _ = tokens.create(ttl=60)

    def unrecorded(joined: object) -> None:
        raise OSError("the roster cannot be written")

    service = JoinService(ca, tokens, host_port=1, lifetime=600, on_joined=unrecorded)
    cert, key = ca.server_files("127.0.0.1")
    async with anyio.create_task_group() as tg:
        port = await tg.start(service.serve, "127.0.0.1", 0, server_context(cert, key, ca.cert_path))
        request = Join(token=token, csr=csr_for(new_key(), "host-a").decode(), cores=1)
        with pytest.raises(JoinRefused) as refused:
            await join("127.0.0.1", port, ca.cert_pem, request)
        tg.cancel_scope.cancel()
    # It said nothing after "127.0.0.1:PORT: " before.
    assert str(refused.value) == (
        f"the join port 127.0.0.1:{port} closed the connection without an answer (see the controller's log)"
    )
