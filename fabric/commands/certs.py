"""``fabric cert``: a hosted service's certificates (Add, List, Delete Service Certificate), and
a self-signed one for development.

Reading an upload and making a certificate load cryptography (~0.1 s): only ``add`` and
``create-self-signed`` import it, when they run; ``list`` and ``delete`` only talk to the API.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from fabric.client import FabricClient
from fabric.commands.client import fail, state_dir_option, user_errors
from fabric.frontend.api import Certificate

if TYPE_CHECKING:
    from fabric.certs.parse import CertificateFormat


def _read_upload(file: Path) -> bytes:
    """The file's bytes, refused past MAX_UPLOAD_BYTES before it is read whole."""
    from fabric.certs.parse import MAX_UPLOAD_BYTES

    try:
        with file.open("rb") as f:
            data = f.read(MAX_UPLOAD_BYTES + 1)
    except OSError as error:
        raise fail(f"cannot read {file}: {error.strerror}") from None
    if len(data) > MAX_UPLOAD_BYTES:
        raise fail(f"{file} is over {MAX_UPLOAD_BYTES} bytes; a certificate file is a few KB")
    return data


def _upload(
    client: FabricClient, service: str, data: bytes, fmt: CertificateFormat, password: str
) -> Certificate:
    """Add the certificate, creating the hosted service first if it does not exist yet (as
    `fabric deploy` does), so that certificates can be uploaded before the first deployment."""
    if client.hosted_service(service) is None:
        client.create_hosted_service(service.lower(), label=service)
    return client.add_certificate(service.lower(), data, certificate_format=fmt, password=password)


def _line(cert: Certificate) -> str:
    expires = f"{cert.not_after:%Y-%m-%d}" if cert.not_after else "?"
    names = ",".join(cert.dns_names) or "-"
    return f"{cert.thumbprint_algorithm}-{cert.thumbprint}  expires {expires}  {names}  {cert.subject}"


@click.group()
def cert() -> None:
    """A hosted service's certificates, named by thumbprint in the configuration."""


@cert.command("add")
@click.argument("service")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--password", default="", help="The PFX's (or the PEM key's) password.")
@state_dir_option
def add(service: str, file: Path, password: str, state_dir: Path) -> None:
    """Upload FILE (a .pfx, or a PEM file with the certificate and its key) to SERVICE."""
    from fabric.certs.parse import CertificateError, detect_format, parse_upload

    data = _read_upload(file)
    fmt = detect_format(data)
    with user_errors(CertificateError):
        parse_upload(data, fmt, password)  # a mistake is named here, before anything is sent
        with FabricClient(state_dir) as client:
            added = _upload(client, service, data, fmt, password)
    click.echo(f"added {_line(added)}")


@cert.command("list")
@click.argument("service")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per certificate.")
@state_dir_option
def list_(service: str, as_json: bool, state_dir: Path) -> None:
    """List SERVICE's certificates."""
    with user_errors(), FabricClient(state_dir) as client:
        found = client.certificates(service)
    for c in found:
        click.echo(msgspec.json.encode(c).decode() if as_json else _line(c))
    if not found and not as_json:
        click.echo(f"hosted service {service} has no certificates")


@cert.command("delete")
@click.argument("service")
@click.argument("thumbprint")
@state_dir_option
def delete(service: str, thumbprint: str, state_dir: Path) -> None:
    """Delete certificate THUMBPRINT (hex, or sha1-<hex>) of SERVICE."""
    with user_errors(), FabricClient(state_dir) as client:
        client.delete_certificate(service, thumbprint)
    click.echo(f"deleted {thumbprint}")


@cert.command("create-self-signed")
@click.argument("service")
@click.option("--dns", "dns_names", multiple=True, required=True, help="A DNS name (repeat for more).")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True, help="Its life.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the certificate (PEM, no key) here, for clients to trust.",
)
@state_dir_option
def create_self_signed(
    service: str, dns_names: tuple[str, ...], days: int, out: Path | None, state_dir: Path
) -> None:
    """Make a self-signed certificate for --dns and upload it to SERVICE (for development)."""
    from fabric.certs.parse import CertificateError, self_signed

    with user_errors(CertificateError):
        made = self_signed(list(dns_names), days=days)
        pem = made.certificate_pem().encode() + made.key_pem()
        with FabricClient(state_dir) as client:
            added = _upload(client, service, pem, "pem", "")
    if out is not None:
        out.write_text(made.certificate_pem())
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    click.echo(f"added {_line(added)}")
    click.echo(
        f'use it in the configuration: <Certificate name="..." thumbprint="{added.thumbprint}" '
        f'thumbprintAlgorithm="sha1" />  (valid until {until:%Y-%m-%d})'
    )
