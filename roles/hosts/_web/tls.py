"""TLS for the web core's https endpoints: one server context per endpoint that picks the
certificate for each handshake by SNI, and can be given new certificates while it serves.

Each endpoint has a default certificate (the one its InputEndpoint names) and the role's other
certificates as candidates: a client asking for ``www.a.test`` by SNI gets the candidate whose
subjectAltName covers that name (``*.a.test`` covers one label), the default otherwise. That is
how two sites with host-header bindings on one endpoint each present their own certificate.
Reloading swaps the contexts new handshakes use; connections already open keep theirs, so a
certificate rotates without a dropped request.

Building contexts reads files and parses certificates: do it in a worker thread.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping

from .spec import CertificateSpec, TlsEndpointSpec, WebSpecError

logger = logging.getLogger(__name__)

#: what hypercorn offers by ALPN (it serves both)
ALPN = ["h2", "http/1.1"]


def server_context(cert: CertificateSpec) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding one certificate and its key.

    Raises:
        WebSpecError: a file cannot be read or the key does not match, naming the files.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(cert.certificate_path, cert.key_path)
    except PermissionError:
        raise WebSpecError(
            f"the web worker may not read {cert.key_path}: the certificate's permissionLevel is "
            "elevated; make it limitedOrElevated to serve https with it"
        ) from None
    except (OSError, ssl.SSLError) as error:
        raise WebSpecError(
            f"cannot serve TLS with {cert.certificate_path} and {cert.key_path}: {error}"
        ) from None
    return context


def dns_names(path: str) -> list[str]:
    """The DNS names of the PEM certificate at ``path`` (its subjectAltName, else its CN)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    with open(path, "rb") as file:
        cert = x509.load_pem_x509_certificates(file.read())[0]
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [name.lower() for name in alt.get_values_for_type(x509.DNSName)]


def name_matches(pattern: str, name: str) -> bool:
    """Whether a certificate name (maybe ``*.x.y``) covers the host ``name``."""
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


class _Endpoint:
    """One endpoint's contexts: the default, and each candidate with its names."""

    def __init__(self, spec: TlsEndpointSpec) -> None:
        self.default = server_context(spec.default)
        self.by_name: list[tuple[str, ssl.SSLContext]] = []
        self.by_name += [(name, self.default) for name in dns_names(spec.default.certificate_path)]
        for cert in spec.candidates:
            try:
                context = server_context(cert)
            except WebSpecError as error:
                # Another certificate of the role (an elevated one, say) is only a candidate
                # for SNI names: the endpoint serves without it.
                logger.info("not offered by SNI: %s", error)
                continue
            self.by_name += [(name, context) for name in dns_names(cert.certificate_path)]

    def pick(self, server_name: str | None) -> ssl.SSLContext:
        if server_name:
            name = server_name.lower().rstrip(".")
            for pattern, context in self.by_name:
                if name_matches(pattern, name):
                    return context
        return self.default


class TlsContexts:
    """The TLS of a web worker's https endpoints, by endpoint name."""

    def __init__(self, specs: Mapping[str, TlsEndpointSpec]) -> None:
        """Load every endpoint's certificates (blocking); raises WebSpecError."""
        self._endpoints = {name: _Endpoint(spec) for name, spec in specs.items()}
        # The listener holds the default certificate too, for a handshake the callback leaves.
        self._listeners = {name: self._listener(name, spec) for name, spec in specs.items()}

    def __contains__(self, endpoint: str) -> bool:
        return endpoint in self._endpoints

    def _listener(self, endpoint: str, spec: TlsEndpointSpec) -> ssl.SSLContext:
        listener = server_context(spec.default)

        def pick(conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
            conn.context = self._endpoints[endpoint].pick(server_name)

        listener.sni_callback = pick
        return listener

    def listener_context(self, endpoint: str) -> ssl.SSLContext:
        """The context an endpoint's listener wraps connections with: each handshake switches
        to the certificate its SNI name asks for (the default without one), from the
        certificates in force at that moment."""
        return self._listeners[endpoint]

    def reload(self, specs: Mapping[str, TlsEndpointSpec]) -> None:
        """Use new certificates for the next handshakes (blocking: loads them first; raises
        WebSpecError and keeps the old ones when one cannot be loaded)."""
        loaded = {name: _Endpoint(spec) for name, spec in specs.items() if name in self._endpoints}
        self._endpoints.update(loaded)
