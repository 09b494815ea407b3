"""What a role harness runs: the entry point, the kind of host, and the RoleEnvironment it sees."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from roles.entry_point import RoleEntryPoint
from roles.protocol import EndpointInfo, InstanceInfo, LocalResourceInfo, RoleEnvironmentData

#: protocols an endpoint may have (as in a service definition)
PROTOCOLS: Final = ("tcp", "udp", "http", "https")
#: a harness builds one process's view: a few dozen instances is already a large deployment
MAX_INSTANCES: Final = 100
MAX_STORAGE_MB: Final = 1024 * 1024

RoleKind = Literal["worker", "web"]


@dataclass(frozen=True, kw_only=True)
class PeerRole:
    """Another role of the deployment, as RoleEnvironment.roles shows it: its instance count and
    endpoints (name -> protocol), each instance's on a free local port."""

    instances: int = 1
    endpoints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RoleSpec:
    """What a harness runs: a RoleEntryPoint subclass (or the role's code folder to find it in,
    as the fabric does), the kind of role host, and the RoleEnvironment the role sees.

    Build one with ``role_spec()`` (keyword arguments), or from a service's definition and
    configuration with ``fabric.testing.role_spec_from_service()``.
    """

    entry_point: type[RoleEntryPoint] | None = None
    #: the role's code folder: searched for the entry point when ``entry_point`` is None
    app_root: str = ""
    #: the module the definition names (``worker.py``), or "" to search app_root
    entry_module: str = ""
    kind: RoleKind = "worker"
    environment: RoleEnvironmentData
    on_stop_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.entry_point is None and not self.app_root:
            raise ValueError("a RoleSpec needs an entry_point class or the app_root folder to find it in")
        if self.entry_point is not None:
            check_entry_point(self.entry_point)
        if self.kind not in ("worker", "web"):
            raise ValueError(f"kind must be 'worker' or 'web', not {self.kind!r}")
        if not 0 < self.on_stop_timeout <= 24 * 3600:
            raise ValueError(f"on_stop_timeout must be between 0 and 86400 s, not {self.on_stop_timeout}")


def check_entry_point(entry_point: object) -> None:
    """Refuse anything but a RoleEntryPoint subclass, naming what was given."""
    if not (isinstance(entry_point, type) and issubclass(entry_point, RoleEntryPoint)):
        raise TypeError(
            f"{entry_point!r} is not a RoleEntryPoint subclass: pass the role's class "
            "(class Worker(RoleEntryPoint): ...) or its code folder"
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A local port nobody listens on now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def instance_id(role: str, index: int) -> str:
    """Azure's instance id: ``<Role>_IN_<n>``."""
    return f"{role}_IN_{index}"


def _instances(role: str, count: int, endpoints: Mapping[str, str]) -> list[InstanceInfo]:
    _check_count(f"role {role!r} instances", count)
    for name, protocol in endpoints.items():
        if not name:
            raise ValueError(f"role {role!r} has an endpoint without a name")
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"endpoint {role}/{name} has protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}"
            )
    return [
        InstanceInfo(
            id=instance_id(role, index),
            role_name=role,
            update_domain=index % 5,  # Azure's default upgradeDomainCount
            fault_domain=index % 2,
            endpoints={
                name: EndpointInfo(name=name, protocol=protocol, host="127.0.0.1", port=free_port())
                for name, protocol in endpoints.items()
            },
        )
        for index in range(count)
    ]


def _check_count(what: str, count: int) -> None:
    if not 1 <= count <= MAX_INSTANCES:
        raise ValueError(f"{what} must be between 1 and {MAX_INSTANCES}, not {count}")


def role_spec(
    entry_point: type[RoleEntryPoint] | str | os.PathLike[str],
    *,
    root: str | os.PathLike[str],
    role: str = "WorkerRole",
    kind: RoleKind = "worker",
    settings: Mapping[str, str] | None = None,
    local_storage: Mapping[str, int] | None = None,
    endpoints: Mapping[str, str] | None = None,
    instances: int = 1,
    index: int = 0,
    other_roles: Mapping[str, PeerRole] | None = None,
    deployment_id: str = "harness",
    entry_module: str = "",
    on_stop_timeout: float = 300.0,
) -> RoleSpec:
    """A RoleSpec from keyword arguments.

    Args:
        entry_point: the RoleEntryPoint subclass, or the role's code folder (searched as the
            fabric does: the ``entry_module``, else the first .py file defining a subclass).
        root: where the LocalStorage folders are made (``<root>/<name>``).
        role: the role's name; the instance is ``<role>_IN_<index>``.
        kind: "worker" (WaWorkerHost: an entry point is required) or "web" (WaIISHost: the
            default entry point when the code defines none; sites are not served).
        settings: the configuration settings, name -> value; only these are declared.
        local_storage: LocalStorage resources, name -> size in MB.
        endpoints: the role's endpoints, name -> protocol, on free 127.0.0.1 ports.
        instances: how many instances the role has; ``index`` is this one.
        other_roles: the deployment's other roles, by name.

    Raises:
        ValueError, TypeError: an argument is out of range or of the wrong kind.
    """
    if isinstance(entry_point, str | os.PathLike):
        app_root, entry_class = os.fspath(entry_point), None
        if not Path(app_root).is_dir():
            raise ValueError(f"the role's code folder {app_root} does not exist")
    else:
        check_entry_point(entry_point)
        app_root, entry_class = "", entry_point
    if not role:
        raise ValueError("role must be a name")
    _check_count("instances", instances)
    if not 0 <= index < instances:
        raise ValueError(f"index must be between 0 and {instances - 1} (instances={instances}), not {index}")
    own = _instances(role, instances, dict(endpoints or {}))
    topology = {role: own}
    for name, peer in (other_roles or {}).items():
        if name == role:
            raise ValueError(f"other_roles names {role!r}, the role under test; use instances= for it")
        topology[name] = _instances(name, peer.instances, dict(peer.endpoints))
    resources: dict[str, LocalResourceInfo] = {}
    for name, size in (local_storage or {}).items():
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"local storage name {name!r} is not a folder name")
        if not 1 <= size <= MAX_STORAGE_MB:
            raise ValueError(f"local storage {name!r} must be 1 to {MAX_STORAGE_MB} MB, not {size}")
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        resources[name] = LocalResourceInfo(name=name, root_path=str(folder), maximum_size_mb=size)
    for name, value in (settings or {}).items():
        if not isinstance(value, str):
            raise TypeError(f"setting {name!r} must be a str (as in a .cscfg), not {type(value).__name__}")
    environment = RoleEnvironmentData(
        deployment_id=deployment_id,
        emulated=True,
        current_instance=own[index],
        settings=dict(settings or {}),
        local_resources=resources,
        roles=topology,
    )
    return RoleSpec(
        entry_point=entry_class,
        app_root=app_root,
        entry_module=entry_module,
        kind=kind,
        environment=environment,
        on_stop_timeout=on_stop_timeout,
    )
