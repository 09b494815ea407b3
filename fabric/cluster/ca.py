"""The cluster's certificate authority: an ECDSA P-256 key and a self-signed certificate in the
controller's state folder (``<state>/cluster/ca.key``, owner-only, and ``ca.pem``).

Its public key hash is kubeadm's: ``sha256:`` and the hex SHA-256 of the CA certificate's
SubjectPublicKeyInfo (DER). A host that has no certificate yet pins the CA by it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: how long the CA itself is valid (kubeadm: 10 years)
CA_LIFETIME = datetime.timedelta(days=3650)
#: a certificate's validity starts this much before it is signed (clocks differ a little)
BACKDATE = datetime.timedelta(minutes=5)
#: what a host name may be: it becomes a certificate's CN and DNS name and a node name
HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
#: the ids of the controller's own local hosts (``local-host<n>``), which no joined host may take
LOCAL_HOST_ID = re.compile(r"^local-host[0-9]+$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


class CAError(ValueError):
    """A certificate request or a CA hash is not acceptable (the message says what to change)."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (created 0600, never wider), whole:
    through a temporary file of this write's own, so that writes at once (from an event loop
    and a thread) never rename each other's file; the last rename wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (written owner-only)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_hash(cert: x509.Certificate) -> str:
    """kubeadm's CA pin: ``sha256:<hex of SHA-256 over the SubjectPublicKeyInfo DER>``."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def check_hash_format(value: str) -> str:
    """``value`` lower-cased, or CAError when it is not ``sha256:`` and 64 hex digits."""
    value = value.strip().lower()
    if not _HASH.match(value):
        raise CAError(
            f"--ca-hash must be sha256: and 64 hex digits (as `fabric token create` prints), not {value!r}"
        )
    return value


def csr_for(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A certificate request (PEM) for host ``name``, signed with its own key."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class ClusterCA:
    """The cluster's CA, loaded from (or made in) a folder."""

    folder: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_path(self) -> Path:
        """The CA certificate's PEM file (public)."""
        return self.folder / "ca.pem"

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def hash(self) -> str:
        """The pin a joining host checks: ``sha256:<hex>``."""
        return public_key_hash(self.cert)

    @classmethod
    def open(cls, folder: Path) -> ClusterCA:
        """The CA in ``folder`` (``ca.key`` owner-only, ``ca.pem``), made there the first time.

        Raises:
            CAError: the files are there but unreadable or damaged.
        """
        key_path, cert_path = folder / "ca.key", folder / "ca.pem"
        if key_path.exists() and cert_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), None)
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except (OSError, ValueError) as exc:
                raise CAError(
                    f"the cluster CA in {folder} is damaged ({exc}); move the folder away to make a new one"
                ) from None
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise CAError(f"{key_path} is not an ECDSA key")
            return cls(folder, key, cert)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reddog cluster CA")])
        now = _utcnow()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(folder, key, cert)

    def sign(
        self,
        public_key: ec.EllipticCurvePublicKey,
        name: str,
        lifetime: float,
        *,
        server: bool = False,
    ) -> bytes:
        """A certificate (PEM) for ``name`` (its CN and its DNS or IP name), valid ``lifetime``
        seconds from now; a client certificate, and a server one too with ``server``."""
        now = _utcnow()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            # Backdated a little for clocks that differ, never by much of a short life (the
            # renewal point is a share of the whole validity).
            .not_valid_before(now - min(BACKDATE, datetime.timedelta(seconds=lifetime / 10)))
            .not_valid_after(now + datetime.timedelta(seconds=lifetime))
            .add_extension(x509.SubjectAlternativeName([_alt_name(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def sign_request(self, csr_pem: bytes, lifetime: float, *, renewal: bool = False) -> tuple[str, bytes]:
        """Check a host's certificate request and sign it; returns (host name, certificate PEM).
        A ``renewal`` (by a host showing its current certificate) may name a local host's id: a
        replicated controller's local hosts link as joined ones (fabric.replica.local_hosts).

        Raises:
            CAError: not a PEM request, a bad signature, not ECDSA P-256, or a bad host name.
        """
        try:
            request = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CAError("the certificate request is not a PEM CSR") from None
        if not request.is_signature_valid:
            raise CAError("the certificate request's signature does not match its key")
        key = request.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise CAError("the certificate request's key must be ECDSA P-256")
        names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(names[0].value) if names else ""
        if not HOST_NAME.match(name):
            raise CAError(f"host name {name!r} must be 1-63 lower-case letters, digits, dots or dashes")
        if name == "controller" or _is_ip(name) or (LOCAL_HOST_ID.match(name) and not renewal):
            # The controller's own names (its node name, its address, its local hosts' ids) are
            # never a joined host's.
            raise CAError(
                f"host name {name!r} is reserved (the controller's name, an address, or a local host's)"
            )
        return name, self.sign(key, name, lifetime)

    def server_files(self, address: str, lifetime: float = 365 * 86400.0) -> tuple[Path, Path]:
        """A fresh certificate for the controller at ``address`` (its IP or DNS name) and its
        key, written beside the CA (named for the address: replicas sharing the folder each have
        their own); returns (certificate, key) paths."""
        key = new_key()
        cert_pem = self.sign(key.public_key(), address, lifetime, server=True)
        cert_path, key_path = (
            self.folder / f"controller-{address}.pem",
            self.folder / f"controller-{address}.key",
        )
        write_private(key_path, key_pem(key))
        cert_path.write_bytes(cert_pem)
        return cert_path, key_path


def verify_signed_by(cert_pem: bytes, ca_pem: bytes) -> x509.Certificate:
    """The certificate, once checked to be signed by the CA.

    Raises:
        CAError: not a certificate, or not signed by that CA.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CAError(
            f"the certificate is not signed by the cluster CA: {exc or type(exc).__name__}"
        ) from None
    return cert


def validity(cert_pem: bytes) -> tuple[datetime.datetime, datetime.datetime]:
    """A certificate's (not before, not after), in UTC."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc, cert.not_valid_after_utc
