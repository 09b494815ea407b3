"""Which CA a client trusts for a fabric's API served over HTTPS (``fabric serve --https``, or
a replica's API on the network): the cluster CA, pinned as a file in the client's state folder.

``<state>/ca.pem`` (a client's own folder: ``fabric trust`` fetches it, checking its hash, or
copy the fabric's ``<state>/cluster/ca.pem`` there) or ``<state>/cluster/ca.pem`` (the
fabric's own folder). Only that CA is trusted, never the
system's, and the certificate must name the address in the URL. Plain ``http://`` (loopback)
needs none. Stdlib ssl only: the CLI does not load cryptography for this.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from fabric.client.errors import ClientError

#: a client's own copy of the cluster CA certificate, in its state folder
CA_FILE = "ca.pem"


def ca_file(state_dir: str | os.PathLike[str]) -> Path | None:
    """The cluster CA certificate the client of ``state_dir`` trusts, or None."""
    state = Path(state_dir)
    for path in (state / CA_FILE, state / "cluster" / CA_FILE):
        if path.is_file():
            return path
    return None


def ca_context(path: Path) -> ssl.SSLContext:
    """A client TLS context trusting the CA in ``path`` alone (and checking the address)."""
    context = ssl.create_default_context(cafile=str(path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def api_verify(state_dir: str | os.PathLike[str], url: str) -> ssl.SSLContext | bool:
    """What httpx verifies the API at ``url`` with: True for http:// (nothing to verify), the
    pinned CA's context for https://.

    Raises:
        ClientError: https:// and no CA pinned in the state folder.
    """
    if not url.startswith("https://"):
        return True
    path = ca_file(state_dir)
    if path is None:
        raise ClientError(
            f"the fabric at {url} serves HTTPS and no CA is pinned: `fabric trust ADDRESS:PORT "
            f"--ca-hash sha256:... --state-dir {state_dir}` (its --listen), or copy the fabric's "
            f"<state>/cluster/ca.pem to {Path(state_dir) / CA_FILE}"
        )
    try:
        return ca_context(path)
    except (OSError, ssl.SSLError) as exc:
        raise ClientError(f"{path} is not a CA certificate ({exc})") from None


def folder_verify(state_dir: str | os.PathLike[str]) -> ssl.SSLContext | bool:
    """What httpx verifies any of a folder's replicas with: its pinned CA, else the default."""
    path = ca_file(state_dir)
    return True if path is None else ca_context(path)


def untrusted(exc: BaseException) -> bool:
    """Whether a connection failed because the server's certificate was not the pinned CA's."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
