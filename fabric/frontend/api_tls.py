"""HTTPS for the API: a server certificate from the cluster CA (``<state>/cluster``, the CA
joined hosts pin), for an API on the network (a replica's with ``--listen``) or asked for with
``fabric serve --https``. The API token then never travels in the clear, from clients nor
between replicas forwarding to the leader; clients trust that CA alone (fabric.client.tls).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from pathlib import Path

#: how long the API's certificate is valid (made anew at every start)
LIFETIME = 365 * 86400.0


def wants_tls(host: str, asked: bool) -> bool:
    """Whether an API bound to ``host`` serves HTTPS: asked for, or not on loopback."""
    if asked:
        return True
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: other machines may resolve it


def server_context(state_dir: Path, address: str) -> ssl.SSLContext:
    """A TLS server context with a fresh certificate for ``address`` (its IP or DNS name)
    signed by the state folder's cluster CA (made there the first time). Blocking: run it in a
    thread. The key is written only to a private temporary file, read back at once and removed.

    Raises:
        CAError: the CA files are damaged.
    """
    from fabric.cluster.ca import ClusterCA, key_pem, new_key

    ca = ClusterCA.open(state_dir / "cluster")
    key = new_key()
    chain = ca.sign(key.public_key(), address, LIFETIME, server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2", "http/1.1"])  # what hypercorn's own context offers
    with tempfile.TemporaryDirectory(dir=ca.folder) as private:  # in the owner-only CA folder
        path = Path(private) / "api.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(chain + key_pem(key))
        context.load_cert_chain(path)
    return context
