"""The fabric's log files: timestamped lines appended to the files the seed names."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TextIO


class LogFile:
    """An append-only, line-buffered log with a timestamp and a level on each line.

    Every line is flushed as written: these logs are what a user reads after a crash, so a
    line must never sit in a buffer when the process dies.
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: int = 0o644) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
        self._file: TextIO | None = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def write(self, message: str, *, level: str = "INFO") -> None:
        """Append one line: ``2026-11-22T03:04:05.123Z [INFO] message``."""
        if self._file is None:
            return
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        self._file.write(f"{now}Z [{level}] {message}\n")

    def warning(self, message: str) -> None:
        """Append a WARN line."""
        self.write(message, level="WARN")

    def error(self, message: str) -> None:
        """Append an ERROR line."""
        self.write(message, level="ERROR")

    def close(self) -> None:
        """Close the file; later writes are dropped."""
        if self._file is not None:
            self._file.close()
            self._file = None
