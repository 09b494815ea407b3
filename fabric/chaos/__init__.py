"""Chaos: faults at every layer of the fabric, seeded scenarios, and an availability report.

Import from the modules: ``messages`` (faults and records), ``scenario`` (TOML scenarios and
their schedules), ``runner`` (running one), ``report``. This package imports nothing itself,
so the hooks the controller and host agents load (``hooks``) cost nothing until chaos is used.
"""

from __future__ import annotations
