"""The API token and address files in the state folder, and the constant-time token check.

A running fabric writes ``<state>/token`` (owner-only, 0600) and ``<state>/api`` (its URL);
a client reads both. Whoever can read the token can drive the fabric, exactly as whoever held
the management certificate could drive a subscription.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "token"
API_FILE = "api"
#: the HTTP header a client presents the token in (``Authorization: Bearer <token>``)
AUTH_SCHEME = "Bearer"


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _write_private(path: Path, text: str, mode: int) -> None:
    # Written to a temporary file created with the final mode, then renamed: the secret is never
    # readable by others, not even for the instant between create and chmod.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.chmod(tmp, mode)  # the umask may have removed bits we asked for
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_token(state_dir: str | os.PathLike[str], token: str) -> Path:
    """Write ``<state>/token`` with owner-only permissions (0600); returns its path."""
    path = Path(state_dir) / TOKEN_FILE
    _write_private(path, token, 0o600)
    return path


def write_api_url(state_dir: str | os.PathLike[str], url: str) -> Path:
    """Write ``<state>/api``: the URL a client finds the running fabric at."""
    path = Path(state_dir) / API_FILE
    _write_private(path, url, 0o644)
    return path


def clear_api_url(state_dir: str | os.PathLike[str], url: str) -> None:
    """Remove ``<state>/api`` if it still names ``url`` (a newer fabric may have replaced it)."""
    path = Path(state_dir) / API_FILE
    try:
        if path.read_text(encoding="utf-8").strip() == url:
            path.unlink()
    except FileNotFoundError:
        pass


def read_api_url(state_dir: str | os.PathLike[str]) -> str | None:
    """The URL in ``<state>/api``, or None when there is no such file."""
    try:
        text = (Path(state_dir) / API_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def read_token(state_dir: str | os.PathLike[str]) -> str | None:
    """The token in ``<state>/token``, or None when there is no such file."""
    try:
        text = (Path(state_dir) / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def token_matches(expected: str, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header value carries ``expected`` (compared in constant time)."""
    if not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != AUTH_SCHEME.lower():
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())
