"""The fabric controller: goal state, placement, upgrades and healing, one per machine pool."""

from __future__ import annotations
