"""The fabric controller: goal state, placement, upgrades and healing, one per machine pool."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric.lazy import lazy_exports

# Loaded on first use: importing a module of this package (its messages, say,
# as the API client does) must not start the whole controller.
_EXPORTS: dict[str, str] = {
    "ask": "fabric.controller.client",
    "wait_operation": "fabric.controller.client",
    "FabricController": "fabric.controller.controller",
    "HostFactory": "fabric.controller.hosts",
    "spawn_host_process": "fabric.controller.hosts",
    "ControllerError": "fabric.controller.messages",
    "vm_name": "fabric.controller.model",
    "Store": "fabric.controller.store",
    "StoreError": "fabric.controller.store",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fabric.controller.client import ask as ask
    from fabric.controller.client import wait_operation as wait_operation
    from fabric.controller.controller import FabricController as FabricController
    from fabric.controller.hosts import HostFactory as HostFactory
    from fabric.controller.hosts import spawn_host_process as spawn_host_process
    from fabric.controller.messages import ControllerError as ControllerError
    from fabric.controller.model import vm_name as vm_name
    from fabric.controller.store import Store as Store
    from fabric.controller.store import StoreError as StoreError


__getattr__ = lazy_exports(globals(), _EXPORTS)
