"""Service certificates: reading uploads (PFX, PEM), self-signed ones for development, and the
store that keeps each hosted service's certificates with their keys encrypted at rest."""

from __future__ import annotations

from fabric.certs.parse import CertificateError as CertificateError
from fabric.certs.parse import ParsedCertificate as ParsedCertificate
from fabric.certs.parse import parse_upload as parse_upload
from fabric.certs.parse import self_signed as self_signed
from fabric.certs.store import CertificateStore as CertificateStore
from fabric.certs.store import StoredCertificate as StoredCertificate
from fabric.certs.store import parse_thumbprint as parse_thumbprint
