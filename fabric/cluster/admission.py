"""Which joined host may link to the host port, and from where: the check at each hello.

A link is refused when the host's certificate was revoked or its name removed
(``fabric host remove``, fabric.cluster.revocations). Each admitted link's certificate serial
and peer address are kept by host name: a link whose certificate is revoked later is cut (the
roster looks each heartbeat interval; reports over it are dropped at once), and a host's
heartbeat must advertise the address its link comes from.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fabric.cluster.revocations import Revocations, peer_serial


def _ip(address: str) -> str:
    """The IP of "host:port" ("[v6]:port" too), normalized."""
    host = address.rpartition(":")[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class Admission:
    """The hello check of the host port, and what it learnt of each linked host."""

    def __init__(self, revocations: Revocations) -> None:
        self.revocations = revocations
        #: host name -> (its link's certificate serial, the IP its link comes from)
        self.links: dict[str, tuple[int | None, str]] = {}

    def admit(self, node: str, cert: dict[str, Any], who: str) -> str | None:
        """Listener.admit: why the link is refused, or None (then it is noted)."""
        serial = peer_serial(cert)
        if self.revocations.is_revoked(serial) or self.revocations.removed(node):
            return f"the certificate of host {node!r} was revoked (fabric host remove); join it again with a token"
        self.links[node] = (serial, _ip(who))
        return None

    def revoked(self, node: str) -> bool:
        """Whether the certificate the host's link was admitted with is revoked now."""
        link = self.links.get(node)
        return link is not None and (self.revocations.is_revoked(link[0]) or self.revocations.removed(node))

    def address_refusal(self, node: str, advertised: str) -> str | None:
        """Why a host may not advertise ``advertised`` (its link comes from elsewhere), or None."""
        link = self.links.get(node)
        if link is None or _ip(f"{advertised}:0") == link[1]:
            return None
        return (
            f"host {node!r} advertises address {advertised} but its link comes from {link[1]}: "
            f"its instances must listen where its link comes from (fabric host join --address {link[1]})"
        )
