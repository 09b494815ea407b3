"""The service certificates of each hosted service, on disk under the state folder.

Layout (folders 0700, files 0600, owned by the fabric's user)::

    <state>/certificates/<service>/sha1-<THUMBPRINT>.json   the certificate (PEM) and its key,
                                                          the key encrypted (AES-256-GCM)
    <state>/certificate-store.key                         the 32-byte key that encrypts them

The encryption key is a file of its own, beside the store rather than in it: a copy of the
certificate folder (a backup, a support bundle, `fabric logs` collecting a state folder) carries
no usable private key, and the VMs' sandboxes see neither (the state folder is hidden from
limited code). Each key is sealed with the service and thumbprint as associated data, so a
record copied under another name does not open.

Plain blocking functions: the API and the guest agent call them in worker threads.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import secrets
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from fabric.certs.parse import CertificateError, ParsedCertificate, validity_problem
from fabric.model.configuration import ServiceConfiguration

STORE_DIR = "certificates"
KEY_FILE = "certificate-store.key"
#: certificates one hosted service may hold
MAX_CERTIFICATES = 100
#: a stored record's largest size (an upload is bounded far below this)
MAX_RECORD_BYTES = 1024 * 1024
_THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}")
_NONCE = 12


class StoredCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """One service certificate as the store keeps it."""

    thumbprint: str
    thumbprint_algorithm: str = "sha1"
    subject: str
    issuer: str
    dns_names: list[str] = []
    not_before: datetime.datetime
    not_after: datetime.datetime
    #: the leaf certificate, then its chain, PEM
    certificate_pem: str
    #: nonce + AES-256-GCM ciphertext of the private key's PKCS#8 PEM
    encrypted_key: bytes

    @property
    def certificate(self) -> x509.Certificate:
        """The leaf certificate."""
        return x509.load_pem_x509_certificates(self.certificate_pem.encode())[0]


def parse_thumbprint(text: str) -> tuple[str, str]:
    """(algorithm, THUMBPRINT) from ``sha1-<hex>`` or a bare hex thumbprint.

    Raises:
        CertificateError: not 40 hex digits, or an algorithm other than sha1.
    """
    algorithm, sep, thumbprint = text.rpartition("-")
    algorithm = algorithm.lower() if sep else "sha1"
    if algorithm != "sha1":
        raise CertificateError(f"thumbprint algorithm {algorithm!r} is not supported; use sha1")
    if not _THUMBPRINT.fullmatch(thumbprint):
        raise CertificateError(
            f"{text[:100]!r} is not a certificate thumbprint; give 40 hex digits (sha1-<THUMBPRINT>)"
        )
    return algorithm, thumbprint.upper()


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode obeys the umask
    return path


def _write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class CertificateStore:
    """The hosted services' certificates under one state folder."""

    def __init__(self, state_dir: str | Path) -> None:
        """A store in ``state_dir`` (made on first write)."""
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / STORE_DIR
        self.key_path = self.state_dir / KEY_FILE

    # -- the encryption key ----------------------------------------------------------------------

    def _key(self, create: bool) -> bytes:
        if create and not self.key_path.exists():
            _private_dir(self.state_dir)
            with contextlib.suppress(FileExistsError):  # another writer made it first: use theirs
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(AESGCM.generate_key(bit_length=256))
        try:
            info = self.key_path.stat()
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            raise CertificateError(
                f"the certificate store's key {self.key_path} is missing; upload the certificates again"
            ) from None
        if info.st_mode & 0o077:
            raise CertificateError(
                f"{self.key_path} is readable by others (mode {info.st_mode & 0o777:o}); chmod 600 it"
            )
        if len(key) != 32:
            raise CertificateError(f"{self.key_path} is not a certificate store key (32 bytes)")
        return key

    @staticmethod
    def _aad(service: str, thumbprint: str) -> bytes:
        return f"{service.lower()}/sha1-{thumbprint.upper()}".encode()

    # -- records -------------------------------------------------------------------------------------

    def _folder(self, service: str) -> Path:
        return self.root / service.lower()

    def _path(self, service: str, thumbprint: str) -> Path:
        return self._folder(service) / f"sha1-{thumbprint.upper()}.json"

    def add(self, service: str, parsed: ParsedCertificate) -> StoredCertificate:
        """Store a certificate and its key (replacing the same thumbprint's record).

        Raises:
            CertificateError: the service holds MAX_CERTIFICATES already.
        """
        thumbprint = parsed.thumbprint
        path = self._path(service, thumbprint)
        if not path.exists() and len(self.records(service)) >= MAX_CERTIFICATES:
            raise CertificateError(
                f"hosted service {service!r} holds {MAX_CERTIFICATES} certificates, the most it may; "
                "delete one first"
            )
        nonce = secrets.token_bytes(_NONCE)
        sealed = AESGCM(self._key(create=True)).encrypt(
            nonce, parsed.key_pem(), self._aad(service, thumbprint)
        )
        cert = parsed.certificate
        record = StoredCertificate(
            thumbprint=thumbprint,
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            dns_names=_dns_names(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            certificate_pem=parsed.certificate_pem(),
            encrypted_key=nonce + sealed,
        )
        _private_dir(self.root)
        _write_private(_private_dir(self._folder(service)) / path.name, msgspec.json.encode(record))
        return record

    def records(self, service: str) -> list[StoredCertificate]:
        """Every certificate of a hosted service, by thumbprint."""
        folder = self._folder(service)
        if not folder.is_dir():
            return []
        names = sorted(p.name for p in folder.iterdir() if p.name.startswith("sha1-"))
        found = [self._read(folder / name) for name in names[: MAX_CERTIFICATES + 1]]
        return [r for r in found if r is not None]

    def get(self, service: str, thumbprint: str) -> StoredCertificate | None:
        """One certificate of a hosted service, or None."""
        return self._read(self._path(service, thumbprint))

    def _read(self, path: Path) -> StoredCertificate | None:
        try:
            with path.open("rb") as file:
                data = file.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(data) > MAX_RECORD_BYTES:
            raise CertificateError(f"{path} is larger than a certificate record can be")
        try:
            return msgspec.json.decode(data, type=StoredCertificate)
        except msgspec.DecodeError as error:
            raise CertificateError(f"{path} is damaged ({error}); delete and upload it again") from None

    def delete(self, service: str, thumbprint: str) -> bool:
        """Remove a certificate; False when there was none."""
        try:
            self._path(service, thumbprint).unlink()
        except FileNotFoundError:
            return False
        return True

    def forget(self, service: str) -> None:
        """Remove every certificate of a hosted service (it was deleted)."""
        folder = self._folder(service)
        if folder.is_dir():
            for path in folder.iterdir():
                path.unlink(missing_ok=True)
            folder.rmdir()

    def key_pem(self, service: str, thumbprint: str) -> bytes:
        """The private key of a stored certificate, decrypted (PKCS#8 PEM).

        Raises:
            CertificateError: no such certificate, or its key does not open with the store's key.
        """
        record = self.get(service, thumbprint)
        if record is None:
            raise CertificateError(
                f"certificate sha1-{thumbprint.upper()} is not uploaded to hosted service {service!r}"
            )
        nonce, sealed = record.encrypted_key[:_NONCE], record.encrypted_key[_NONCE:]
        try:
            return AESGCM(self._key(create=False)).decrypt(nonce, sealed, self._aad(service, thumbprint))
        except Exception:  # InvalidTag: another key, or a record moved or altered
            raise CertificateError(
                f"the private key of certificate {thumbprint.upper()} does not open with "
                f"{self.key_path}; upload the certificate again"
            ) from None

    # -- deploy-time checks --------------------------------------------------------------------------

    def configuration_problems(
        self, service: str, configuration: ServiceConfiguration, now: datetime.datetime | None = None
    ) -> list[str]:
        """Why the configuration's certificates cannot be deployed to ``service`` (none: they can).

        Each thumbprint must name a certificate uploaded to the hosted service, valid now.
        """
        problems: list[str] = []
        for role in configuration.roles:
            for given in role.certificates:
                where = f"role {role.name} certificate {given.name!r}"
                if given.thumbprint_algorithm.lower() != "sha1":
                    problems.append(f"{where}: thumbprintAlgorithm must be sha1")
                    continue
                record = self.get(service, given.thumbprint)
                if record is None:
                    problems.append(
                        f"{where}: certificate {given.thumbprint.upper()} is not uploaded to hosted "
                        f"service {service!r}; add it with `fabric cert add {service} FILE`"
                    )
                    continue
                invalid = validity_problem(record.certificate, now)
                if invalid is not None:
                    problems.append(f"{where}: {invalid}")
        return problems


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    names = [str(n) for n in alt.get_values_for_type(x509.DNSName)]
    return names + [str(ip) for ip in alt.get_values_for_type(x509.IPAddress)]
