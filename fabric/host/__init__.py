"""The host OS side: the host agent that boots guests, heartbeats them and restarts them."""

from __future__ import annotations
