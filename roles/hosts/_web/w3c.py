"""The IIS access log: W3C extended format, one u_exYYMMDD.log per UTC day.

Lines are buffered in memory and appended by `flush()`, which `run_flusher` calls every second
and `close()` calls on exit. A file gets the `#Software/#Version/#Date/#Fields` header when it
is created (or found empty), so a day's file carries one header however often workers restart.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import msgspec

SOFTWARE = "Microsoft Internet Information Services 10.0"
FIELDS = (
    "date",
    "time",
    "s-sitename",
    "s-ip",
    "cs-method",
    "cs-uri-stem",
    "cs-uri-query",
    "s-port",
    "cs-username",
    "c-ip",
    "cs(User-Agent)",
    "cs(Referer)",
    "sc-status",
    "sc-substatus",
    "sc-win32-status",
    "time-taken",
)
FLUSH_INTERVAL = 1.0

# Whitespace becomes "+" as in IIS; other control characters would break the line format.
_SPACES = re.compile(r"\s")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AccessRecord(msgspec.Struct, frozen=True):
    """One served request, as the access log records it. `when` is the UTC completion time."""

    when: datetime
    site_name: str
    server_ip: str
    server_port: int
    method: str
    uri_stem: str
    uri_query: str
    client_ip: str
    user_agent: str
    referer: str
    status: int
    time_taken_ms: int
    username: str = ""
    substatus: int = 0
    win32_status: int = 0


def log_file_name(when: datetime) -> str:
    """Return the IIS daily log file name for a UTC time, e.g. u_ex240131.log."""
    return f"u_ex{when:%y%m%d}.log"


def encode_value(value: str) -> str:
    """Return a field value as IIS writes it: "-" when empty, whitespace as "+"."""
    if not value:
        return "-"
    value = _SPACES.sub("+", value)
    return _CONTROL.sub(lambda match: f"%{ord(match.group()):02X}", value)


def format_record(record: AccessRecord) -> str:
    """Return the log line (without newline) for one request, fields in FIELDS order."""
    when = record.when.astimezone(UTC)
    values = (
        f"{when:%Y-%m-%d}",
        f"{when:%H:%M:%S}",
        encode_value(record.site_name),
        encode_value(record.server_ip),
        encode_value(record.method),
        encode_value(record.uri_stem),
        encode_value(record.uri_query),
        str(record.server_port),
        encode_value(record.username),
        encode_value(record.client_ip),
        encode_value(record.user_agent),
        encode_value(record.referer),
        str(record.status),
        str(record.substatus),
        str(record.win32_status),
        str(record.time_taken_ms),
    )
    return " ".join(values)


def format_header(now: datetime, software: str = SOFTWARE) -> str:
    """Return the four directive lines IIS writes at the top of a log file."""
    return (
        f"#Software: {software}\n"
        "#Version: 1.0\n"
        f"#Date: {now.astimezone(UTC):%Y-%m-%d %H:%M:%S}\n"
        f"#Fields: {' '.join(FIELDS)}\n"
    )


def parse_log(text: str) -> list[dict[str, str]]:
    """Parse W3C extended log text into one dict per line, keyed by the latest #Fields."""
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("#Fields:"):
            fields = line.split(":", 1)[1].split()
        elif line and not line.startswith("#"):
            values = line.split(" ")
            if len(values) != len(fields):
                raise ValueError(f"log line has {len(values)} fields, #Fields names {len(fields)}")
            rows.append(dict(zip(fields, values, strict=True)))
    return rows


class W3CLog:
    """A buffered W3C extended log writing daily files into `folder` (created if missing)."""

    def __init__(self, folder: str | Path, *, software: str = SOFTWARE) -> None:
        """Log into `folder`; `software` is the #Software directive's value."""
        self.folder = Path(folder)
        self.software = software
        self._pending: list[AccessRecord] = []
        self._lock = threading.Lock()  # flush runs in a worker thread while requests log

    def log(self, record: AccessRecord) -> None:
        """Queue one record; it reaches the file on the next flush."""
        with self._lock:
            self._pending.append(record)

    def flush(self) -> None:
        """Append every queued record to its day's file (blocking file I/O)."""
        with self._lock:
            records, self._pending = self._pending, []
        if records:
            self._append(records)

    async def run_flusher(
        self,
        interval: float = FLUSH_INTERVAL,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Flush every `interval` seconds until cancelled, then flush once more."""
        task_status.started()
        try:
            while True:
                await anyio.sleep(interval)
                await anyio.to_thread.run_sync(self.flush)
        finally:
            self.flush()

    def _append(self, records: Iterable[AccessRecord]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        by_file: dict[str, list[str]] = {}
        for record in records:
            by_file.setdefault(log_file_name(record.when.astimezone(UTC)), []).append(
                format_record(record) + "\n"
            )
        for name, lines in by_file.items():
            with open(self.folder / name, "a", encoding="utf-8", newline="\n") as file:
                if file.tell() == 0:
                    file.write(format_header(datetime.now(UTC), self.software))
                file.writelines(lines)
