"""The guest OS side of a VM: guest agent, host bootstrapper and the processes they supervise."""

from __future__ import annotations
