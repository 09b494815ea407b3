"""Bootstrap tokens, as kubeadm's: ``<id>.<secret>``, ``[a-z0-9]{6}.[a-z0-9]{16}``.

The id is stored in the clear (to list and delete a token by it), the secret only as its
SHA-256; each token expires, and deleting it revokes it at once. The store is one small JSON
file in the controller's state folder (``<state>/cluster/tokens.json``, owner-only), written
whole and replaced atomically; a lock keeps concurrent changes in this process in order.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import threading
import time
from pathlib import Path

import msgspec

#: what a token looks like
TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_ALPHABET = string.ascii_lowercase + string.digits
#: the longest --ttl (kubeadm has no limit; a bootstrap token is meant to be short-lived)
MAX_TTL = 365 * 86400.0
DEFAULT_TTL = 86400.0


class TokenRefused(Exception):
    """A bootstrap token is malformed, unknown, expired or revoked (the message says which)."""


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored token: its id, the SHA-256 of its secret, and when it expires (Unix time)."""

    id: str
    secret_sha256: str
    created: float
    expires: float
    description: str = ""


class CreateToken(msgspec.Struct, frozen=True, kw_only=True):
    """The body of POST /cluster/tokens."""

    ttl: float = DEFAULT_TTL
    description: str = ""


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A token as the API lists it (never its secret)."""

    id: str
    created: float
    expires: float
    description: str = ""


class NewToken(msgspec.Struct, frozen=True, kw_only=True):
    """A token just made: the whole token (shown once), and what is needed to join with it."""

    token: str
    id: str
    expires: float
    ca_hash: str
    #: the controller's host port (``ADDRESS:PORT``), empty when `fabric serve` has no --listen
    address: str = ""

    @property
    def join_command(self) -> str:
        """The command a new host runs."""
        where = self.address or "ADDRESS:PORT"
        return f"fabric host join {where} --token {self.token} --ca-hash {self.ca_hash}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_ttl(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d`` (or seconds) as seconds.

    Raises:
        ValueError: not such a duration, or not between 1 s and a year.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(f"--ttl {text!r} is not a duration such as 90s, 15m, 24h or 7d")
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if not 1 <= seconds <= MAX_TTL:
        raise ValueError(f"--ttl {text!r} must be between 1s and 365d")
    return seconds


class TokenStore:
    """The bootstrap tokens of one controller, in ``<folder>/tokens.json``."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "tokens.json"
        self._lock = threading.Lock()

    def _read(self) -> dict[str, TokenRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        records = msgspec.json.decode(data, type=list[TokenRecord])
        return {r.id: r for r in records}

    def _write(self, records: dict[str, TokenRecord]) -> None:
        # Here, not at the top: the CA module loads cryptography, which `fabric token` (the
        # client, reading these views) must not pay for.
        from fabric.cluster.ca import write_private

        write_private(self.path, msgspec.json.encode(sorted(records.values(), key=lambda r: r.created)))

    def create(self, ttl: float = DEFAULT_TTL, description: str = "") -> tuple[str, TokenRecord]:
        """A new token valid ``ttl`` seconds; returns (the whole token, its record).
        Expired tokens are dropped from the file meanwhile."""
        if not 1 <= ttl <= MAX_TTL:
            raise ValueError(f"a token's ttl must be between 1 s and {MAX_TTL:g} s, not {ttl:g}")
        now = time.time()
        with self._lock:
            records = {k: r for k, r in self._read().items() if r.expires > now}
            while True:
                token_id = "".join(secrets.choice(_ALPHABET) for _ in range(6))
                if token_id not in records:
                    break
            secret = "".join(secrets.choice(_ALPHABET) for _ in range(16))
            record = TokenRecord(
                id=token_id,
                secret_sha256=_digest(secret),
                created=now,
                expires=now + ttl,
                description=description,
            )
            records[token_id] = record
            self._write(records)
        return f"{token_id}.{secret}", record

    def list(self) -> list[TokenInfo]:
        """Tokens not expired yet, oldest first."""
        now = time.time()
        with self._lock:
            records = self._read()
        return [
            TokenInfo(id=r.id, created=r.created, expires=r.expires, description=r.description)
            for r in sorted(records.values(), key=lambda r: r.created)
            if r.expires > now
        ]

    def delete(self, token_id: str) -> bool:
        """Revoke a token by its id (or the whole token); False when there is none."""
        token_id = token_id.split(".", 1)[0]
        with self._lock:
            records = self._read()
            if records.pop(token_id, None) is None:
                return False
            self._write(records)
        return True

    def check(self, token: str) -> TokenRecord:
        """The record of a valid token.

        Raises:
            TokenRefused: malformed, unknown (never made, or revoked), wrong secret, or expired.
        """
        match = TOKEN.match(token.strip())
        if match is None:
            raise TokenRefused("the token is malformed: a bootstrap token looks like abcdef.0123456789abcdef")
        token_id, secret = match.groups()
        with self._lock:
            record = self._read().get(token_id)
        if record is None or not hmac.compare_digest(record.secret_sha256, _digest(secret)):
            raise TokenRefused(
                f"token {token_id} is not valid (unknown or deleted); make one with `fabric token create`"
            )
        if record.expires <= time.time():
            raise TokenRefused(f"token {token_id} has expired; make a new one with `fabric token create`")
        return record
