"""reddog's fabric: the platform that deploys, runs and heals cloud services."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reddog")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
