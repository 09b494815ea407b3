"""Chaos inside the fabric controller: the chaos agent (an actor beside the controller) and
the faults it applies: process kills by place, link faults, load balancer toxics, storage
fills, configuration storms, watches, and the undo of each.

Import from the modules: ``messages`` (the chaos API's requests and records), ``plugin`` (the
controller's hand-off to its agent), ``agent``. This package imports nothing itself, so the
controller pays for the agent and its faults only once chaos is used.
"""

from __future__ import annotations
