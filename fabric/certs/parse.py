"""Reading an uploaded service certificate (PFX/PKCS#12, or PEM certificate and key) and making
a self-signed one for development, with the ``cryptography`` package.

Everything here is plain and blocking (parsing a PFX derives keys: milliseconds of CPU); the
API calls it in a worker thread. Every input is bounded before it is parsed.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

#: the largest upload accepted (a PFX with a chain is a few KB; Azure allowed far less than this)
MAX_UPLOAD_BYTES = 256 * 1024
#: the longest PFX password accepted
MAX_PASSWORD_CHARS = 1024
#: certificates beyond the leaf a PFX or PEM upload may carry (its chain)
MAX_CHAIN = 10
#: the longest life a self-signed certificate may be given
MAX_SELF_SIGNED_DAYS = 3650
#: DNS names a self-signed certificate may carry
MAX_DNS_NAMES = 20

CertificateFormat = Literal["pfx", "pem"]

_PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)


class CertificateError(Exception):
    """A certificate the fabric will not take or use; the message says what to change."""


@dataclass(frozen=True)
class ParsedCertificate:
    """A certificate with its private key and chain, as read from an upload."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def thumbprint(self) -> str:
        """The SHA-1 thumbprint, upper-case hex, as Azure shows it."""
        return thumbprint_of(self.certificate)

    def certificate_pem(self) -> str:
        """The leaf certificate and then its chain, PEM."""
        parts = [c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain)]
        return b"".join(parts).decode("ascii")

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM (encrypt it before it touches a disk)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def thumbprint_of(certificate: x509.Certificate) -> str:
    """A certificate's SHA-1 thumbprint, upper-case hex."""
    return certificate.fingerprint(hashes.SHA1()).hex().upper()


def detect_format(data: bytes) -> CertificateFormat:
    """``pem`` for text with PEM armour, else ``pfx``."""
    return "pem" if b"-----BEGIN " in data[:4096] else "pfx"


def parse_upload(data: bytes, fmt: CertificateFormat, password: str = "") -> ParsedCertificate:
    """Read an uploaded certificate with its private key.

    Raises:
        CertificateError: too large, not a PFX/PEM, a wrong password, no private key, a key
            that does not belong to the certificate, a key type other than RSA or EC, or a
            longer chain than MAX_CHAIN.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise CertificateError(
            f"the certificate file is {len(data)} bytes; at most {MAX_UPLOAD_BYTES} are accepted"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise CertificateError(f"the password is longer than {MAX_PASSWORD_CHARS} characters")
    parsed = _parse_pfx(data, password) if fmt == "pfx" else _parse_pem(data, password)
    if len(parsed.chain) > MAX_CHAIN:
        raise CertificateError(
            f"certificate {parsed.thumbprint} comes with {len(parsed.chain)} chain certificates; "
            f"at most {MAX_CHAIN} are accepted"
        )
    return parsed


def _parse_pfx(data: bytes, password: str) -> ParsedCertificate:
    try:
        key, certificate, extra = pkcs12.load_key_and_certificates(data, password.encode() or None)
    except ValueError as error:
        text = str(error).lower()
        if "password" in text or "mac" in text or "decrypt" in text:
            raise CertificateError(
                "the PFX file cannot be opened with this password; give the right one with --password"
            ) from None
        raise CertificateError(
            "the file is not a PFX (PKCS#12) file; give a .pfx, or a PEM file with the certificate and its key"
        ) from None
    if certificate is None:
        raise CertificateError("the PFX file holds no certificate")
    return _with_key(certificate, key, tuple(extra))


def _parse_pem(data: bytes, password: str) -> ParsedCertificate:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(
            "the PEM file holds no certificate (-----BEGIN CERTIFICATE-----); add it before its key"
        ) from None
    key = None
    found = _PEM_KEY.search(data)
    if found is not None:
        try:
            key = serialization.load_pem_private_key(found.group(0), password.encode() or None)
        except TypeError:
            raise CertificateError(
                f"the private key of certificate {thumbprint_of(certificates[0])} is encrypted; "
                "give its password with --password"
            ) from None
        except ValueError:
            raise CertificateError(
                f"the private key of certificate {thumbprint_of(certificates[0])} cannot be read "
                "(a wrong password, or not a PEM private key)"
            ) from None
    return _with_key(certificates[0], key, tuple(certificates[1:]))


def _with_key(
    certificate: x509.Certificate, key: object, chain: tuple[x509.Certificate, ...]
) -> ParsedCertificate:
    thumbprint = thumbprint_of(certificate)
    if key is None:
        raise CertificateError(
            f"certificate {thumbprint} comes without its private key; upload a PFX with the key, "
            "or a PEM file with the certificate and its key"
        )
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError(f"certificate {thumbprint}: only RSA and EC keys are supported")
    if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
        raise CertificateError(f"the private key given does not belong to certificate {thumbprint}")
    return ParsedCertificate(certificate, key, chain)


def validity_problem(certificate: x509.Certificate, now: datetime.datetime | None = None) -> str | None:
    """Why a certificate cannot be used now (expired, not yet valid), or None."""
    now = now or datetime.datetime.now(datetime.UTC)
    thumbprint = thumbprint_of(certificate)
    if now < certificate.not_valid_before_utc:
        return f"certificate {thumbprint} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
    if now > certificate.not_valid_after_utc:
        return f"certificate {thumbprint} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    return None


def self_signed(
    dns_names: list[str],
    *,
    days: int = 365,
    not_before: datetime.datetime | None = None,
    issuer: ParsedCertificate | None = None,
    ca: bool = False,
) -> ParsedCertificate:
    """A new certificate for ``dns_names`` (an EC P-256 key), signed by itself or by ``issuer``.

    ``ca`` makes it a certificate authority (for tests that trust a CA of their own).

    Raises:
        CertificateError: no name, too many names, or a life outside 1..MAX_SELF_SIGNED_DAYS days.
    """
    if not dns_names or len(dns_names) > MAX_DNS_NAMES:
        raise CertificateError(f"give 1 to {MAX_DNS_NAMES} DNS names (--dns NAME)")
    for name in dns_names:
        if not name or len(name) > 253 or any(c.isspace() or ord(c) < 33 for c in name):
            raise CertificateError(f"{name!r} is not a DNS name")
    if not 1 <= days <= MAX_SELF_SIGNED_DAYS:
        raise CertificateError(f"--days must be between 1 and {MAX_SELF_SIGNED_DAYS}")
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0][:64])])
    alt_names: list[x509.GeneralName] = []
    for name in dns_names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    signer = issuer.key if issuer else key
    return ParsedCertificate(builder.sign(signer, hashes.SHA256()), key)


def to_pfx(parsed: ParsedCertificate, password: str) -> bytes:
    """The certificate, its key and chain as a PFX protected by ``password``."""
    encryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(
        None, parsed.key, parsed.certificate, list(parsed.chain) or None, encryption
    )
