"""Service certificates through the API, shaped as the Service Management operations Add, List,
Get and Delete Service Certificate::

    GET    .../hostedservices/{service}/certificates                    List -> Certificates
    POST   .../hostedservices/{service}/certificates                    Add  (CertificateFile body)
    GET    .../hostedservices/{service}/certificates/sha1-{thumbprint}  Get  -> Certificate
    DELETE .../hostedservices/{service}/certificates/sha1-{thumbprint}  Delete

and the deploy-time check FFE runs before a deployment, upgrade or configuration change: every
thumbprint the configuration names is uploaded to the hosted service and valid now.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import anyio
import msgspec
from cryptography.hazmat.primitives import serialization

from fabric.certs import CertificateError, CertificateStore, StoredCertificate, parse_thumbprint, parse_upload
from fabric.certs.parse import MAX_PASSWORD_CHARS, MAX_UPLOAD_BYTES
from fabric.controller import shared_folder
from fabric.frontend._http import Request, Response
from fabric.frontend.api import ApiError, Certificate, Certificates, bad_request, not_found
from fabric.frontend.store import SubscriptionRecord
from fabric.model.service import parse_configuration

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe

#: the largest Add request body: the upload in base64, its password and the JSON around them
MAX_ADD_BODY = MAX_UPLOAD_BYTES * 4 // 3 + 4 * MAX_PASSWORD_CHARS + 1024


class CertificateFile(msgspec.Struct, frozen=True, kw_only=True, rename="pascal", forbid_unknown_fields=True):
    """POST .../certificates: the file (base64), its format and its password."""

    data: Annotated[bytes, msgspec.Meta(max_length=MAX_UPLOAD_BYTES)]
    certificate_format: Literal["pfx", "pem"] = "pfx"
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD_CHARS)] = ""


def certificate_view(url: str, record: StoredCertificate) -> Certificate:
    """The API's view of a stored certificate (never its key)."""
    return Certificate(
        certificate_url=f"{url}/sha1-{record.thumbprint}",
        thumbprint=record.thumbprint,
        thumbprint_algorithm=record.thumbprint_algorithm,
        data=record.certificate.public_bytes(serialization.Encoding.DER),
        subject=record.subject,
        issuer=record.issuer,
        dns_names=record.dns_names,
        not_before=record.not_before,
        not_after=record.not_after,
    )


T = TypeVar("T")


async def _run(function: Callable[..., T], *args: Any) -> T:
    try:
        return await anyio.to_thread.run_sync(function, *args)
    except CertificateError as error:
        raise bad_request(str(error), "InvalidCertificate") from None


def forget_certificates(state_dir: str | Path, service: str) -> None:
    """Remove a deleted hosted service's certificates (not once this fabric's term ended: the
    next leader's service of that name may own them now)."""
    if shared_folder.acting():
        CertificateStore(state_dir).forget(service)


def _changing(what: str, function: Callable[..., T]) -> Callable[..., T]:
    """``function`` (it changes the store), run only while this fabric may write its state folder
    (a controller replica whose term ended may not: fabric.controller.shared_folder)."""

    def change(*args: Any) -> T:
        if not shared_folder.acting():
            raise ApiError(503, "ServiceUnavailable", shared_folder.refusal(what))
        return function(*args)

    return change


async def route(rdfe: Rdfe, sub: SubscriptionRecord, service: str, rest: list[str], r: Request) -> Response:
    """Answer a request under ``.../hostedservices/{service}/certificates``."""
    hosted = rdfe.hosted(sub, service)
    store = CertificateStore(rdfe.state_dir)
    url = f"/subscriptions/{sub.id}/services/hostedservices/{hosted.name}/certificates"
    match rest:
        case []:
            rdfe._allow(r, "GET", "POST")
            if r.method == "GET":
                records = await _run(store.records, hosted.name)
                return Response(200, Certificates(certificates=[certificate_view(url, c) for c in records]))
            r.limit_body(MAX_ADD_BODY)
            body = await r.json(CertificateFile)
            parsed = await _run(parse_upload, body.data, body.certificate_format, body.password)
            record = await _run(_changing("add the certificate", store.add), hosted.name, parsed)
            return Response(201, certificate_view(url, record))
        case [name]:
            rdfe._allow(r, "GET", "DELETE")
            try:
                _, thumbprint = parse_thumbprint(name)
            except CertificateError as error:
                raise bad_request(str(error), "InvalidCertificate") from None
            if r.method == "GET":
                found = await _run(store.get, hosted.name, thumbprint)
                if found is None:
                    raise _missing(hosted.name, thumbprint)
                return Response(200, certificate_view(url, found))
            if not await _run(_changing("delete the certificate", store.delete), hosted.name, thumbprint):
                raise _missing(hosted.name, thumbprint)
            return Response(200)
    raise not_found(f"no API at {r.path}; certificates are at {url}[/sha1-<thumbprint>]")


def _missing(service: str, thumbprint: str) -> ApiError:
    return not_found(f"certificate sha1-{thumbprint} is not uploaded to hosted service {service!r}")


def check_certificates(
    state_dir: str, service: str, configuration: bytes | None, configuration_name: str
) -> None:
    """Refuse a configuration whose certificates cannot be deployed to ``service`` now.

    Blocking (reads the store): call it in a worker thread. A configuration that does not parse
    is left to the configuration checks, which name its problems.

    Raises:
        ApiError: 400 InvalidCertificate naming each thumbprint that is not uploaded, expired
            or not yet valid.
    """
    if configuration is None:
        return
    parsed, _ = parse_configuration(configuration, configuration_name)
    if parsed is None:
        return
    try:
        problems = CertificateStore(state_dir).configuration_problems(service, parsed)
    except CertificateError as error:
        raise bad_request(str(error), "InvalidCertificate") from None
    if problems:
        raise bad_request("; ".join(problems[:5]), "InvalidCertificate")
