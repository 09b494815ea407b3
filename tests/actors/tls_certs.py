"""Test certificates for network links: a CA and certificates it signs (ECDSA P-256), written
as PEM files into a folder, plus the ServerTLS / ClientTLS that use them."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from actors import ClientTLS, ServerTLS

SERVER_NAME = "controller"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


@dataclass
class CA:
    """A certificate authority whose files live in ``folder``."""

    folder: Path
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, folder: Path, name: str = "reddog test CA") -> CA:
        """A new self-signed CA; its certificate is written to ``folder/<name>.pem``."""
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .sign(key, hashes.SHA256())
        )
        ca = cls(folder, name, key, cert)
        ca.ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return ca

    @property
    def ca_path(self) -> Path:
        """The CA certificate's file."""
        return self.folder / f"{self.name.replace(' ', '-')}.pem"

    def issue(self, name: str, *, expired: bool = False, ip: str | None = None) -> tuple[Path, Path]:
        """A certificate for ``name`` (its CN and DNS name; ``ip`` too), for server and client
        use; ``expired``: its validity ended an hour ago. Returns (certificate, key) files."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=1)
        if expired:
            start, end = now - datetime.timedelta(days=2), now - datetime.timedelta(hours=1)
        alt: list[x509.GeneralName] = [x509.DNSName(name)]
        if ip is not None:
            alt.append(x509.IPAddress(ipaddress.ip_address(ip)))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = f"{name}{'-expired' if expired else ''}-by-{self.name.replace(' ', '-')}"
        cert_path, key_path = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path

    def server(self, name: str = SERVER_NAME, **kwargs: bool) -> ServerTLS:
        """A ServerTLS with a certificate for ``name`` from this CA."""
        cert, key = self.issue(name, **kwargs)
        return ServerTLS(cert, key, self.ca_path)

    def client(
        self, name: str, *, server_name: str = SERVER_NAME, trust: CA | None = None, **kwargs: bool
    ) -> ClientTLS:
        """A ClientTLS with a certificate for ``name`` from this CA, trusting ``trust`` (this CA)."""
        cert, key = self.issue(name, **kwargs)
        return ClientTLS(cert, key, (trust or self).ca_path, server_name)
