"""Portal sessions: signing in with the API token buys a session secret, which the portal's page
keeps in its tab's sessionStorage and sends in the ``X-Reddog-Session`` header on every request.

The authority is bound to the portal's origin (scheme, host and port): browsers keep
sessionStorage per origin, and only the page's own script can put it in a header. A cookie
would not be: browsers send cookies by host, whatever the port, so a role's site on the same
machine (127.0.0.1:8080 behind the load balancer) would receive it and could replay it. No
cookie is set and none is read. A cross-site page can neither read the secret nor send the
header (a custom header needs a CORS preflight, which the API never allows), so no CSRF token is
needed either. Sessions live in memory (a restart of the fabric signs everyone out, as a new
token does), expire after ``SESSION_SECONDS`` and number at most ``MAX_SESSIONS`` (signing in
past that ends the oldest).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import anyio

HEADER: Final = "x-reddog-session"
SESSION_SECONDS: Final = 12 * 3600
MAX_SESSIONS: Final = 256
#: a session secret is 43 characters (token_urlsafe(32)); a longer header is not one
_MAX_SECRET: Final = 64


@dataclass(frozen=True)
class Session:
    """One signed-in browser tab."""

    id: str
    expires: float


class Sessions:
    """The signed-in sessions of one RDFE."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def open(self) -> Session:
        """A new session (the oldest ends when there are MAX_SESSIONS)."""
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.popitem(last=False)
        session = Session(id=secrets.token_urlsafe(32), expires=anyio.current_time() + SESSION_SECONDS)
        self._by_id[session.id] = session
        return session

    def close(self, session: Session) -> None:
        """End a session (sign out)."""
        self._by_id.pop(session.id, None)

    def find(self, headers: dict[str, str]) -> Session | None:
        """The live session a request's ``X-Reddog-Session`` header names, or None (a cookie
        never counts)."""
        sid = headers.get(HEADER, "")
        if not sid or len(sid) > _MAX_SECRET:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        if session.expires < anyio.current_time():
            self.close(session)
            return None
        return session

    def allows(self, headers: dict[str, str]) -> bool:
        """Whether a request may act as signed in: it names a live session in its header."""
        return self.find(headers) is not None
