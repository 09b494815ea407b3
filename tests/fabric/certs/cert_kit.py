"""Certificates for tests: a test CA, leaves it signed (valid, expired, not yet valid), PFX and
PEM files of them, and a service folder whose role declares a certificate."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from fabric.certs import ParsedCertificate, self_signed
from fabric.certs.parse import to_pfx

FIXTURES = Path(__file__).parents[1] / "frontend" / "fixtures"


def make_ca() -> ParsedCertificate:
    """A certificate authority of the test's own."""
    return self_signed(["reddog-test-ca"], ca=True, days=30)


def leaf(ca: ParsedCertificate, *names: str, days: int = 30, starts_in_days: float = 0) -> ParsedCertificate:
    """A server certificate for ``names`` signed by ``ca``; valid from now + starts_in_days."""
    start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=starts_in_days, minutes=-5)
    return self_signed(list(names), issuer=ca, days=days, not_before=start)


def expired(ca: ParsedCertificate, *names: str) -> ParsedCertificate:
    """A certificate that expired yesterday."""
    return leaf(ca, *names, days=1, starts_in_days=-2)


def pem_file(parsed: ParsedCertificate, with_key: bool = True) -> bytes:
    """The PEM upload: the certificate (and chain), then its key."""
    return parsed.certificate_pem().encode() + (parsed.key_pem() if with_key else b"")


def pfx_file(parsed: ParsedCertificate, password: str = "secret") -> bytes:
    """The PFX upload."""
    return to_pfx(parsed, password)


def service_with_certificate(folder: Path, thumbprint: str, name: str = "Ssl") -> Path:
    """A copy of the Hello service whose role declares certificate ``name``, set to ``thumbprint``."""
    target = Path(shutil.copytree(FIXTURES / "hello", folder))
    csdef = target / "ServiceDefinition.csdef"
    csdef.write_text(
        csdef.read_text().replace(
            "    <Runtime>",
            f'    <Certificates><Certificate name="{name}" storeLocation="LocalMachine" storeName="My" />'
            "</Certificates>\n    <Runtime>",
        )
    )
    set_thumbprint(target, thumbprint, name)
    return target


def set_thumbprint(folder: Path, thumbprint: str, name: str = "Ssl") -> Path:
    """Write the configuration of ``folder`` naming ``thumbprint`` for certificate ``name``."""
    cscfg = folder / "ServiceConfiguration.Local.cscfg"
    text = (FIXTURES / "hello" / "ServiceConfiguration.Local.cscfg").read_text()
    cscfg.write_text(
        text.replace(
            "  </Role>",
            f'    <Certificates><Certificate name="{name}" thumbprint="{thumbprint}" thumbprintAlgorithm="sha1" />'
            "</Certificates>\n  </Role>",
        )
    )
    return cscfg
