"""RoleEnvironment: what a role instance knows about itself, its deployment, and its events.

``RoleEnvironment`` is a module-level object (like Azure's static class)::

    from roles import RoleEnvironment

    if RoleEnvironment.is_available:
        greeting = RoleEnvironment.get_config_setting("Greeting")
        scratch = RoleEnvironment.get_local_resource("Scratch").root_path
        me = RoleEnvironment.current_instance
        port = me.instance_endpoints["HttpIn"].port

    @RoleEnvironment.changing.subscribe
    def on_changing(args):
        if any(change.name == "ConnectionString" for change in args.changes):
            args.cancel = True  # recycle to apply it

Outside a role host process ``is_available`` is False and every getter raises
RoleEnvironmentError; subscribing to events works but they never fire.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import msgspec

from .environment_data import CertificateInfo, InstanceInfo, LocalResourceInfo, RoleEnvironmentData
from .events import (
    Event,
    RoleEnvironmentChangedEventArgs,
    RoleEnvironmentChangingEventArgs,
    RoleEnvironmentStoppingEventArgs,
    RoleInstanceStatusCheckEventArgs,
    SimultaneousChangedEventArgs,
    SimultaneousChangingEventArgs,
)

__all__ = [
    "LocalResource",
    "Role",
    "RoleEnvironment",
    "RoleEnvironmentError",
    "RoleInstance",
    "RoleInstanceEndpoint",
]


class RoleEnvironmentError(Exception):
    """RoleEnvironment cannot answer: not inside a role, or an unknown setting or resource name."""


class RoleInstanceEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint of a role instance: where to reach it."""

    name: str
    protocol: str
    host: str
    port: int

    @property
    def ip_endpoint(self) -> tuple[str, int]:
        """(host, port), ready for socket.create_connection."""
        return (self.host, self.port)


class RoleInstance(msgspec.Struct, frozen=True, kw_only=True):
    """A role instance: its id, role, update and fault domains, and endpoints by name."""

    id: str
    role_name: str
    update_domain: int
    fault_domain: int
    instance_endpoints: Mapping[str, RoleInstanceEndpoint]


class Role(msgspec.Struct, frozen=True, kw_only=True):
    """A role of the deployment and its instances (service discovery)."""

    name: str
    instances: tuple[RoleInstance, ...]


#: A LocalStorage resource: ``name``, ``root_path`` (a folder) and ``maximum_size_mb``.
LocalResource = LocalResourceInfo

_NOT_IN_A_ROLE: Final = (
    "not running in a role: RoleEnvironment is only available inside a role host process "
    "(check RoleEnvironment.is_available first)"
)


def _instance(info: InstanceInfo) -> RoleInstance:
    endpoints = {
        name: RoleInstanceEndpoint(name=name, protocol=e.protocol, host=e.host, port=e.port)
        for name, e in info.endpoints.items()
    }
    return RoleInstance(
        id=info.id,
        role_name=info.role_name,
        update_domain=info.update_domain,
        fault_domain=info.fault_domain,
        instance_endpoints=MappingProxyType(endpoints),
    )


class _Snapshot:
    """One RoleEnvironmentData, converted once into the objects the getters hand out."""

    def __init__(self, data: RoleEnvironmentData) -> None:
        self.data = data
        self.current_instance = _instance(data.current_instance)
        roles = {
            name: Role(name=name, instances=tuple(_instance(i) for i in instances))
            for name, instances in data.roles.items()
        }
        self.roles: Mapping[str, Role] = MappingProxyType(roles)


class _RoleEnvironment:
    """The role's view of its deployment; use the ``RoleEnvironment`` object, not this class."""

    def __init__(self) -> None:
        self._snapshot: _Snapshot | None = None
        self._recycle: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self.changing: Event[RoleEnvironmentChangingEventArgs] = Event("changing")
        """Raised before a configuration or topology change; a handler may set ``args.cancel``."""
        self.changed: Event[RoleEnvironmentChangedEventArgs] = Event("changed")
        """Raised once a change is in force (the getters already return the new values)."""
        self.status_check: Event[RoleInstanceStatusCheckEventArgs] = Event("status_check")
        """Raised at every status check; a handler may call ``args.set_busy()``."""
        self.stopping: Event[RoleEnvironmentStoppingEventArgs] = Event("stopping")
        """Raised when the instance is stopping, before on_stop."""
        self.simultaneous_changing: Event[SimultaneousChangingEventArgs] = Event("simultaneous_changing")
        """Raised before a Blast topology change (every instance at once; no cancel)."""
        self.simultaneous_changed: Event[SimultaneousChangedEventArgs] = Event("simultaneous_changed")
        """Raised once a Blast topology change is in force."""

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise RoleEnvironmentError(_NOT_IN_A_ROLE)
        return snapshot

    # -- what a role reads ---------------------------------------------------------------------

    @property
    def is_available(self) -> bool:
        """True inside a role host process, where the getters answer."""
        return self._snapshot is not None

    @property
    def is_emulated(self) -> bool:
        """True when running on a development fabric rather than a production-like one."""
        return self._current().data.emulated

    @property
    def deployment_id(self) -> str:
        """The deployment's id."""
        return self._current().data.deployment_id

    @property
    def current_instance(self) -> RoleInstance:
        """This instance: id, role name, update and fault domain, endpoints by name."""
        return self._current().current_instance

    @property
    def roles(self) -> Mapping[str, Role]:
        """Every role of the deployment by name, with its instances and their endpoints."""
        return self._current().roles

    def get_config_setting(self, name: str) -> str:
        """Return the value of the configuration setting ``name``.

        Raises:
            RoleEnvironmentError: not in a role, or no setting has that name.
        """
        settings = self._current().data.settings
        try:
            return settings[name]
        except KeyError:
            raise RoleEnvironmentError(
                f"no configuration setting named {name!r}; known settings: {_names(settings)} "
                "(declare it under ConfigurationSettings in the service definition and configuration)"
            ) from None

    def get_local_resource(self, name: str) -> LocalResource:
        """Return the LocalStorage resource ``name`` (its root_path and maximum_size_mb).

        Raises:
            RoleEnvironmentError: not in a role, or no local resource has that name.
        """
        resources = self._current().data.local_resources
        try:
            return resources[name]
        except KeyError:
            raise RoleEnvironmentError(
                f"no local resource named {name!r}; known local resources: {_names(resources)} "
                "(declare it under LocalResources in the service definition)"
            ) from None

    def get_certificate(self, name: str) -> CertificateInfo:
        """Return the certificate ``name``: its thumbprint and the paths of its PEM files
        (``path``, and ``key_path`` for its private key), to serve TLS with.

        Raises:
            RoleEnvironmentError: not in a role, or no certificate has that name.
        """
        certificates = self._current().data.certificates
        try:
            return certificates[name]
        except KeyError:
            raise RoleEnvironmentError(
                f"no certificate named {name!r}; known certificates: {_names(certificates)} "
                "(declare it under Certificates in the service definition)"
            ) from None

    def request_recycle(self) -> None:
        """Ask for this instance to be recycled: stopping is raised, on_stop runs, it restarts.

        Safe to call from any thread (a plain ``def run`` runs in a worker thread).

        Raises:
            RoleEnvironmentError: not in a role.
        """
        self._current()
        recycle = self._recycle
        if recycle is not None:
            recycle()

    def __repr__(self) -> str:
        if self._snapshot is None:
            return "<RoleEnvironment (not in a role)>"
        return f"<RoleEnvironment {self._snapshot.current_instance.id}>"

    # -- for role hosts --------------------------------------------------------------------------

    def _attach(self, data: RoleEnvironmentData, recycle: Callable[[], None] | None) -> None:
        """Make RoleEnvironment answer from ``data``; ``recycle`` handles request_recycle()."""
        with self._lock:
            self._snapshot = _Snapshot(data)
            self._recycle = recycle

    def _replace(self, data: RoleEnvironmentData) -> None:
        """Answer from ``data`` from now on (a configuration or topology change took effect)."""
        with self._lock:
            self._snapshot = _Snapshot(data)

    def _detach(self) -> None:
        """Back to "not in a role", every handler removed (tests use this)."""
        with self._lock:
            self._snapshot = None
            self._recycle = None
        for event in (
            self.changing,
            self.changed,
            self.status_check,
            self.stopping,
            self.simultaneous_changing,
            self.simultaneous_changed,
        ):
            event.clear()


def _names(mapping: Mapping[str, object]) -> str:
    return ", ".join(sorted(mapping)) or "(none)"


#: The role's environment: settings, local resources, instances, events. See the module doc.
RoleEnvironment: Final = _RoleEnvironment()
