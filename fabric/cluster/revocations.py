"""Host certificates the cluster CA signed for joined hosts, and those revoked.

``<state>/cluster/certificates.json`` (owner-only) holds, for each serial the join port signed
(a join or a renewal), the host name and when it expires; a revoked one is marked so.
``fabric host remove NAME`` revokes every certificate of NAME: the host port refuses it at its
next hello and cuts a link it holds, the join port refuses its renewals, and the name is free to
join again (with a token). A serial is forgotten once its certificate has expired (it is refused
for that then). Blocking calls (files): the loop's checks read memory, reloaded when the file
changed (one stat).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from cryptography import x509

from fabric.cluster.ca import write_private

FILE = "certificates.json"


class Issued(msgspec.Struct, frozen=True, kw_only=True):
    """One certificate signed for a joined host."""

    name: str
    expires: float
    revoked: float = 0.0


class _File(msgspec.Struct, kw_only=True):
    #: serial (hex) -> its certificate
    certificates: dict[str, Issued] = {}
    #: host names removed (and when), until one joins again under that name
    removed: dict[str, float] = {}


def serial_of(cert_pem: bytes) -> int:
    """The serial number of a PEM certificate."""
    return x509.load_pem_x509_certificate(cert_pem).serial_number


def peer_serial(peer_cert: dict[str, Any] | None) -> int | None:
    """The serial of a certificate as ssl's getpeercert() shows it (hex), or None."""
    text = (peer_cert or {}).get("serialNumber")
    try:
        return int(str(text), 16) if text else None
    except ValueError:
        return None


class Revocations:
    """The host certificates of one cluster folder (see the module)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._state = _File()
        self._serials: dict[int, Issued] = {}

    def _read(self) -> _File:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=_File)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return _File()

    def _write(self, state: _File) -> None:
        now = time.time()
        state.certificates = {k: v for k, v in state.certificates.items() if v.expires > now}
        write_private(self.path, msgspec.json.encode(state))

    def record(self, name: str, cert_pem: bytes, expires: float) -> None:
        """A certificate was signed for ``name`` (blocking): the name is no longer removed."""
        with self._lock:
            state = self._read()
            state.certificates[f"{serial_of(cert_pem):x}"] = Issued(name=name, expires=expires)
            state.removed.pop(name, None)
            self._write(state)

    def revoke(self, name: str) -> int:
        """Remove ``name``: revoke every certificate of it not expired yet; how many (blocking)."""
        with self._lock:
            state = self._read()
            now = time.time()
            mine = [k for k, v in state.certificates.items() if v.name == name and not v.revoked]
            for serial in mine:
                state.certificates[serial] = msgspec.structs.replace(state.certificates[serial], revoked=now)
            state.removed[name] = now
            self._write(state)
            return len(mine)

    def _current(self) -> _File:
        """The entries as the file has them now (read again only when it changed)."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            with contextlib.suppress(OSError, ValueError):
                self._state = self._read()
                self._serials = {int(k, 16): v for k, v in self._state.certificates.items()}
            self._stamp = stamp
        return self._state

    def is_revoked(self, serial: int | None) -> bool:
        """Whether the certificate of this serial was revoked."""
        self._current()
        entry = self._serials.get(serial) if serial is not None else None
        return entry is not None and entry.revoked > 0

    def removed(self, name: str) -> bool:
        """Whether ``name`` was removed and has not joined again since."""
        return name in self._current().removed
