"""Portal sessions: signing in with the API token buys a session cookie and a CSRF token.

The cookie is HttpOnly (no script reads it) and SameSite=Strict (no other site's page sends
it); every change (POST, PUT, PATCH, DELETE) must also carry the session's CSRF token in the
``X-CSRF-Token`` header, which only the portal's own page knows. Sessions live in memory (a
restart of the fabric signs everyone out, as a new token does), expire after ``SESSION_SECONDS``
and number at most ``MAX_SESSIONS`` (signing in past that ends the oldest).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import anyio

COOKIE: Final = "reddog_session"
CSRF_HEADER: Final = "x-csrf-token"
SESSION_SECONDS: Final = 12 * 3600
MAX_SESSIONS: Final = 256
_CHANGES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Session:
    """One signed-in browser."""

    id: str
    csrf: str
    expires: float


class Sessions:
    """The signed-in sessions of one RDFE."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def open(self) -> Session:
        """A new session (the oldest ends when there are MAX_SESSIONS)."""
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.popitem(last=False)
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires=anyio.current_time() + SESSION_SECONDS,
        )
        self._by_id[session.id] = session
        return session

    def close(self, session: Session) -> None:
        """End a session (sign out)."""
        self._by_id.pop(session.id, None)

    def find(self, headers: dict[str, str]) -> Session | None:
        """The live session a request's cookie names, or None."""
        sid = cookie_value(headers.get("cookie", ""), COOKIE)
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        if session.expires < anyio.current_time():
            self.close(session)
            return None
        return session

    def allows(self, method: str, headers: dict[str, str]) -> bool:
        """Whether a request may act as signed in: a live session, and its CSRF token on a change."""
        session = self.find(headers)
        if session is None:
            return False
        if method.upper() not in _CHANGES:
            return True
        return hmac.compare_digest(headers.get(CSRF_HEADER, "").encode(), session.csrf.encode())


def cookie_value(header: str, name: str) -> str:
    """The value of cookie ``name`` in a Cookie header ("" when absent)."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def session_cookie(session: Session | None) -> str:
    """The Set-Cookie value that starts ``session`` (None: that ends the cookie)."""
    if session is None:
        return f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    return f"{COOKIE}={session.id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}"
