"""The plugin agents the Diagnostics, RemoteAccess and RemoteForwarder imports run as startup tasks."""

from __future__ import annotations
