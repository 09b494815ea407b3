"""An actor that reports what its process may do: its capabilities, and files it can or cannot touch."""

from __future__ import annotations

import errno
import os
from typing import Any

import msgspec

from actors import Actor


class Probe(msgspec.Struct, frozen=True, tag=True):
    """Try each (action, path); the answer maps "action path" to what came of it (see attempt)."""

    tries: list[tuple[str, str]]


class Status(msgspec.Struct, frozen=True, tag=True):
    """Ask for the process's /proc/self/status fields (uids and capability sets)."""


def attempt(action: str, path: str) -> str:
    """Try ``action`` on ``path``: "ok", what was found ("entries": the names in a folder, "mount":
    "ro" or "rw"), or the name of the error raised (e.g. "EACCES")."""
    try:
        if action == "read":
            with open(path, "rb") as file:
                file.read(1)
        elif action == "write":
            with open(path, "ab") as file:
                file.write(b"forged\n")
        elif action == "entries":
            return ",".join(sorted(os.listdir(path)))
        elif action == "mount":
            return "ro" if os.statvfs(path).f_flag & os.ST_RDONLY else "rw"
        else:
            raise ValueError(f"unknown action {action!r}")
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"


def status_fields() -> dict[str, str]:
    """Uid, Gid, NoNewPrivs and the Cap* lines of /proc/self/status."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name.startswith("Cap") or name in ("Uid", "Gid", "Groups", "NoNewPrivs"):
                found[name] = value.strip()
    return found


class Prober(Actor):
    """Answers Probe and Status from inside its (limited) process."""

    async def receive(self, message: Any) -> Any:
        match message:
            case Probe(tries=tries):
                return {f"{action} {path}": attempt(action, path) for action, path in tries}
            case Status():
                return status_fields()
        return await super().receive(message)
