"""Chaos runs: seeded scenarios, their schedules and journals, probes, load, and an
availability report, run against a fabric through its API client like any other client.

Import from the modules: ``scenario`` (TOML scenarios), ``schedule`` (their plans), ``runner``
(running one), ``report``. The faults themselves are applied inside the fabric, by the
controller's chaos agent (fabric.controller.chaos, whose ``messages`` are the chaos API's).
"""

from __future__ import annotations
