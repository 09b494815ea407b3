"""The role host processes: WaWorkerHost, WaIISHost, WaWebHost (HWC) and the W3WP web worker."""

from __future__ import annotations
