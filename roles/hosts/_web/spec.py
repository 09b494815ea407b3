"""What one web worker serves: sites, bindings, virtual paths, inherited sockets, log folder."""

from __future__ import annotations

from pathlib import Path

import msgspec


class WebSpecError(Exception):
    """A web spec that cannot be served as written; the message says what to change."""


class BindingSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A site binding: requests on `endpoint` whose Host matches `host_header` ("" = any host)."""

    endpoint: str
    host_header: str = ""
    name: str = ""


class VirtualApplicationSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A folder served as its own application under the URL path prefix `path` (e.g. "/api")."""

    path: str
    physical_path: str


class VirtualDirectorySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A folder whose files are served as static content under the URL path prefix `path`."""

    path: str
    physical_path: str


class SiteSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One <Site> of the service definition, laid out at `physical_path` (E/sitesroot/<index>)."""

    name: str
    index: int
    physical_path: str
    bindings: tuple[BindingSpec, ...]
    applications: tuple[VirtualApplicationSpec, ...] = ()
    directories: tuple[VirtualDirectorySpec, ...] = ()


class CertificateSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A certificate (PEM, with its chain) and its private key, by path."""

    certificate_path: str
    key_path: str


class TlsEndpointSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An https endpoint: the certificate it serves by default, and the role's other
    certificates, each served to a client asking by SNI for a name it covers."""

    default: CertificateSpec
    candidates: tuple[CertificateSpec, ...] = ()


class WebSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything one web worker process serves.

    `endpoints` maps each endpoint name to the file descriptor of its listening socket (inherited
    from the bootstrapper). `log_dir` is the W3SVC log folder (DiagnosticStore/LogFiles/W3SVC1);
    `site_id` is the W3SVC id of the site with index 0 (site n is logged as W3SVC<site_id + n>).
    `idle_timeout` (seconds) makes the worker exit by itself once no request has run for that
    long; None keeps it running. `graceful_timeout` bounds how long in-flight requests may run
    after a shutdown was asked for. `tls` names the endpoints served over TLS (https).
    """

    sites: tuple[SiteSpec, ...]
    endpoints: dict[str, int]
    log_dir: str
    site_id: int = 1
    idle_timeout: float | None = None
    graceful_timeout: float = 10.0
    tls: dict[str, TlsEndpointSpec] = {}


def normalize_prefix(path: str) -> str:
    """Return a virtual path as "/a/b": leading slash, no trailing slash, no empty segments."""
    segments = [segment for segment in path.replace("\\", "/").split("/") if segment]
    if not segments:
        raise WebSpecError(f"virtual path {path!r} is the site root; give it a name such as /api")
    if any(segment in {".", ".."} for segment in segments):
        raise WebSpecError(f"virtual path {path!r} contains '.' or '..'; use a plain path")
    return "/" + "/".join(segments)


def check_web_spec(spec: WebSpec) -> None:
    """Raise WebSpecError if the sites cannot be served as the spec describes."""
    if not spec.sites:
        raise WebSpecError("the web spec has no sites; add at least one")
    names: set[str] = set()
    seen: dict[tuple[str, str], str] = {}
    for site in spec.sites:
        if site.name in names:
            raise WebSpecError(f"two sites are named {site.name!r}; site names must be unique")
        names.add(site.name)
        if not site.bindings:
            raise WebSpecError(f"site {site.name!r} has no bindings; add one per endpoint")
        for binding in site.bindings:
            if binding.endpoint not in spec.endpoints:
                raise WebSpecError(
                    f"site {site.name!r} binds endpoint {binding.endpoint!r} but the worker has "
                    f"no socket for it; add it to endpoints (known: {sorted(spec.endpoints)})"
                )
            key = (binding.endpoint, host_key(binding.host_header))
            if key in seen:
                raise WebSpecError(
                    f"sites {seen[key]!r} and {site.name!r} both bind host "
                    f"{binding.host_header or '(any)'!r} on endpoint {binding.endpoint!r}; "
                    "give one of them another host header"
                )
            seen[key] = site.name
        paths = [a.path for a in site.applications] + [d.path for d in site.directories]
        prefixes = [normalize_prefix(path).lower() for path in paths]
        if len(set(prefixes)) != len(prefixes):
            raise WebSpecError(f"site {site.name!r} mounts two folders at the same virtual path")


def host_key(host: str) -> str:
    """Return the routing key of a Host header or binding: lower case, port and final dot gone."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal keeps its colons
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    host = host.rsplit(":", 1)[0] if ":" in host else host
    return host.rstrip(".")


def load_web_spec(path: str | Path) -> WebSpec:
    """Read a WebSpec from a JSON file; raise WebSpecError naming the file if it is not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise WebSpecError(f"cannot read web spec {path}: {error.strerror}") from error
    try:
        return msgspec.json.decode(data, type=WebSpec)
    except msgspec.ValidationError as error:
        raise WebSpecError(f"web spec {path} is invalid: {error}") from error
    except msgspec.DecodeError as error:
        raise WebSpecError(f"web spec {path} is not valid JSON: {error}") from error


def dump_web_spec(spec: WebSpec) -> bytes:
    """Encode a WebSpec as the JSON that load_web_spec reads."""
    return msgspec.json.encode(spec)
