"""The fabric controller: goal state, placement, upgrades and healing, one per machine pool."""

from __future__ import annotations

from fabric.controller.client import ask as ask
from fabric.controller.client import wait_operation as wait_operation
from fabric.controller.controller import FabricController as FabricController
from fabric.controller.hosts import HostFactory as HostFactory
from fabric.controller.hosts import spawn_host_process as spawn_host_process
from fabric.controller.messages import ControllerError as ControllerError
from fabric.controller.model import vm_name as vm_name
from fabric.controller.store import Store as Store
from fabric.controller.store import StoreError as StoreError
